;; Hostile: asks for a second page of memory on start. A script has exactly one.
(module
  (memory 1)
  (func (export "start")
    (drop (memory.grow (i32.const 1)))))
