;; Hostile: says "spam" 10,000 times in one event. Only MAX_EFFECTS_PER_EVENT get through.
(module
  (import "terrane" "say" (func $say (param i32 i32 i32)))
  (memory 1 1)
  (data (i32.const 0) "spam")
  (func (export "start")
    (local $i i32)
    (loop $again
      (call $say (i32.const 0) (i32.const 0) (i32.const 4))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 10000))))))
