;; Refused at load: imports a function the ABI does not have.
(module
  (import "terrane" "launch_missiles" (func $launch (param i32)))
  (memory 1 1)
  (func (export "start") (call $launch (i32.const 3))))
