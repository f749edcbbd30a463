;; A ferry of the default world: shuttles east, then west, then east again (45 s each way at
;; 7 m/s, so it crosses into the neighbour region and back), carrying its script state across
;; region borders and hosts. Its floating text counts the borders it has crossed, from the
;; `region_cross` event. Facing where it goes.
(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (import "terrane" "set_vel" (func $set_vel (param f32 f32 f32)))
  (import "terrane" "set_rot" (func $set_rot (param f32 f32 f32 f32)))
  (import "terrane" "set_text" (func $set_text (param i32 i32)))
  (memory 1 1)
  (data (i32.const 256) "ferry, borders crossed: 0000")
  (global $dir (mut f32) (f32.const 1))
  (global $ticks (mut i32) (i32.const 0))
  (global $crossed (mut i32) (i32.const 0))

  (func (export "start")
    (call $set_timer (i64.const 200))
    (call $show))

  (func (export "timer")
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    ;; Turn round every 45 s (225 timer events).
    (if (i32.ge_u (global.get $ticks) (i32.const 225))
      (then
        (global.set $ticks (i32.const 0))
        (global.set $dir (f32.neg (global.get $dir)))))
    (call $set_vel (f32.mul (global.get $dir) (f32.const 7)) (f32.const 0) (f32.const -3))
    ;; East: no rotation; west: half a turn about the vertical.
    (if (f32.gt (global.get $dir) (f32.const 0))
      (then (call $set_rot (f32.const 0) (f32.const 0) (f32.const 0) (f32.const 1)))
      (else (call $set_rot (f32.const 0) (f32.const 0) (f32.const 1) (f32.const 0)))))

  (func (export "region_cross") (param $from i32) (param $to i32)
    (global.set $crossed (i32.add (global.get $crossed) (i32.const 1)))
    (call $show))

  ;; Writes the count as four digits after the text's 24-byte prefix, and shows it.
  (func $show
    (local $n i32) (local $i i32)
    (local.set $n (global.get $crossed))
    (local.set $i (i32.const 3))
    (loop $digits
      (i32.store8 (i32.add (i32.const 280) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $digits (i32.ge_s (local.get $i) (i32.const 0))))
    (call $set_text (i32.const 256) (i32.const 28)))
)
