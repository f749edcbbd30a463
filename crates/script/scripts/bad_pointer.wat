;; Hostile: says 100 bytes starting 6 bytes before the end of memory.
(module
  (import "terrane" "say" (func $say (param i32 i32 i32)))
  (memory 1 1)
  (func (export "touch") (param i64)
    (call $say (i32.const 0) (i32.const 65530) (i32.const 100))))
