;; A plant of the default world: grows every few seconds, and once grown now and then seeds a
;; new plant (template "plant") nearby while fewer than 4 objects stand within 10 m. Eaten
;; (a 3-byte message), it shrinks, and goes when nothing is left.
(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (import "terrane" "set_scale" (func $set_scale (param f32 f32 f32)))
  (import "terrane" "get_pos" (func $get_pos (param i32)))
  (import "terrane" "sensor" (func $sensor (param i32 f32 i32 i32) (result i32)))
  (import "terrane" "create_object" (func $create (param i32 i32 f32 f32 f32 i32)))
  (import "terrane" "random_f32" (func $random_f32 (result f32)))
  (import "terrane" "delete_self" (func $delete_self))
  (memory 1 1)
  (data (i32.const 256) "plant")
  (global $size (mut f32) (f32.const 0.3))

  (func $show
    (call $set_scale (global.get $size) (global.get $size) (f32.mul (global.get $size) (f32.const 1.5))))

  (func (export "start")
    (call $show)
    (call $set_timer
      (i64.add (i64.const 2000) (i64.trunc_f32_u (f32.mul (call $random_f32) (f32.const 2000))))))

  (func (export "timer")
    (if (f32.lt (global.get $size) (f32.const 1.2))
      (then
        (global.set $size (f32.add (global.get $size) (f32.const 0.1)))
        (call $show)
        (return)))
    (if (f32.gt (call $random_f32) (f32.const 0.15)) (then (return)))
    (if (i32.ge_u (call $sensor (i32.const 2) (f32.const 10) (i32.const 1024) (i32.const 4)) (i32.const 4))
      (then (return)))
    (call $get_pos (i32.const 0))
    (call $create (i32.const 256) (i32.const 5)
      (f32.add (f32.load (i32.const 0)) (f32.sub (f32.mul (call $random_f32) (f32.const 16)) (f32.const 8)))
      (f32.add (f32.load (i32.const 4)) (f32.sub (f32.mul (call $random_f32) (f32.const 16)) (f32.const 8)))
      (f32.const 0)
      (i32.const 0)))

  (func (export "message") (param $from i64) (param $len i32)
    (if (i32.ne (local.get $len) (i32.const 3)) (then (return)))
    (global.set $size (f32.sub (global.get $size) (f32.const 0.25)))
    (if (f32.lt (global.get $size) (f32.const 0.15))
      (then (call $delete_self) (return)))
    (call $show))
)
