;; A grazing animal of the default world: wanders slowly, drifts toward company, eats the
;; plant it stands by (a 3-byte "eat" message), and runs from any avatar within 12 m.
;; Memory: own position at 0, sensor records at 1024, texts from 256.
(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (import "terrane" "sensor" (func $sensor (param i32 f32 i32 i32) (result i32)))
  (import "terrane" "get_pos" (func $get_pos (param i32)))
  (import "terrane" "set_vel" (func $set_vel (param f32 f32 f32)))
  (import "terrane" "random_f32" (func $random_f32 (result f32)))
  (import "terrane" "send_message" (func $send (param i64 i32 i32)))
  (import "terrane" "set_text" (func $set_text (param i32 i32)))
  (import "terrane" "say" (func $say (param i32 i32 i32)))
  (memory 1 1)
  (data (i32.const 256) "eat")
  (data (i32.const 272) "grazing")
  (data (i32.const 288) "fleeing")
  (data (i32.const 304) "moo")
  (global $vx (mut f32) (f32.const 0))
  (global $vy (mut f32) (f32.const 0))
  (global $fleeing (mut i32) (i32.const 0))
  (global $eaten (mut i32) (i32.const 0))

  (func (export "start")
    (call $set_timer (i64.const 500))
    (call $set_text (i32.const 272) (i32.const 7)))

  (func (export "touch") (param $who i64)
    (call $say (i32.const 0) (i32.const 304) (i32.const 3)))

  ;; Sets ($vx, $vy) to `speed` along (dx, dy).
  (func $head (param $dx f32) (param $dy f32) (param $speed f32)
    (local $d f32)
    (local.set $d (f32.sqrt (f32.add (f32.mul (local.get $dx) (local.get $dx))
                                     (f32.mul (local.get $dy) (local.get $dy)))))
    (if (f32.lt (local.get $d) (f32.const 0.01))
      (then (local.set $dx (f32.const 1)) (local.set $dy (f32.const 0)) (local.set $d (f32.const 1))))
    (global.set $vx (f32.mul (f32.div (local.get $dx) (local.get $d)) (local.get $speed)))
    (global.set $vy (f32.mul (f32.div (local.get $dy) (local.get $d)) (local.get $speed))))

  (func (export "timer")
    (call $get_pos (i32.const 0))
    ;; An avatar near: run from the nearest one.
    (if (call $sensor (i32.const 1) (f32.const 12) (i32.const 1024) (i32.const 1))
      (then
        (call $head (f32.sub (f32.load (i32.const 0)) (f32.load (i32.const 1040)))
                    (f32.sub (f32.load (i32.const 4)) (f32.load (i32.const 1044)))
                    (f32.const 5))
        (if (i32.eqz (global.get $fleeing)) (then (call $set_text (i32.const 288) (i32.const 7))))
        (global.set $fleeing (i32.const 1))
        (call $set_vel (global.get $vx) (global.get $vy) (f32.const -3))
        (return)))
    (if (global.get $fleeing) (then (call $set_text (i32.const 272) (i32.const 7))))
    (global.set $fleeing (i32.const 0))
    ;; Something within 2 m: stand and eat it (only plants answer to "eat").
    (if (call $sensor (i32.const 2) (f32.const 2) (i32.const 1024) (i32.const 1))
      (then
        (call $send (i64.load (i32.const 1024)) (i32.const 256) (i32.const 3))
        (global.set $eaten (i32.add (global.get $eaten) (i32.const 1)))
        (call $set_vel (f32.const 0) (f32.const 0) (f32.const -3))
        (return)))
    ;; Now and then a new heading: toward the nearest thing within 10 m, or anywhere.
    (if (f32.lt (call $random_f32) (f32.const 0.2))
      (then
        (if (call $sensor (i32.const 2) (f32.const 10) (i32.const 1024) (i32.const 1))
          (then
            (call $head (f32.sub (f32.load (i32.const 1040)) (f32.load (i32.const 0)))
                        (f32.sub (f32.load (i32.const 1044)) (f32.load (i32.const 4)))
                        (f32.const 1)))
          (else
            (call $head (f32.sub (call $random_f32) (f32.const 0.5))
                        (f32.sub (call $random_f32) (f32.const 0.5))
                        (f32.const 1))))))
    (call $set_vel (global.get $vx) (global.get $vy) (f32.const -3)))
)
