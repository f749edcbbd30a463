;; Hostile: unbounded recursion on touch. The stack limit must stop it.
(module
  (memory 1 1)
  (func $down (param $n i64) (result i64)
    (i64.add (call $down (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
  (func (export "touch") (param $who i64)
    (drop (call $down (local.get $who)))))
