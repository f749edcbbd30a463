;; A vehicle of the default world: drives counter-clockwise round a loop road of 80 m radius
;; about the region's centre at 8 m/s, steering back onto the circle, facing where it goes.
;; Each lap it says "lap" region-wide on channel 7. (Border crossings are not built yet, so
;; the loop stays inside one region.)
(module
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (import "terrane" "get_pos" (func $get_pos (param i32)))
  (import "terrane" "set_vel" (func $set_vel (param f32 f32 f32)))
  (import "terrane" "set_rot" (func $set_rot (param f32 f32 f32 f32)))
  (import "terrane" "region_say" (func $region_say (param i32 i32 i32)))
  (memory 1 1)
  (data (i32.const 256) "lap")
  (global $was_south (mut i32) (i32.const 0))
  (global $laps (mut i32) (i32.const 0))

  (func (export "start")
    (call $set_timer (i64.const 100)))

  (func (export "timer")
    (local $rx f32) (local $ry f32) (local $r f32) (local $ux f32) (local $uy f32) (local $k f32)
    (call $get_pos (i32.const 0))
    (local.set $rx (f32.sub (f32.load (i32.const 0)) (f32.const 128)))
    (local.set $ry (f32.sub (f32.load (i32.const 4)) (f32.const 128)))
    (local.set $r (f32.sqrt (f32.add (f32.mul (local.get $rx) (local.get $rx))
                                     (f32.mul (local.get $ry) (local.get $ry)))))
    (if (f32.lt (local.get $r) (f32.const 0.1))
      (then (local.set $rx (f32.const 1)) (local.set $ry (f32.const 0)) (local.set $r (f32.const 1))))
    (local.set $ux (f32.div (local.get $rx) (local.get $r)))
    (local.set $uy (f32.div (local.get $ry) (local.get $r)))
    ;; Along the tangent, plus a pull back toward the 80 m circle.
    (local.set $k (f32.mul (f32.sub (f32.const 80) (local.get $r)) (f32.const 0.5)))
    (call $set_vel
      (f32.add (f32.mul (f32.neg (local.get $uy)) (f32.const 8)) (f32.mul (local.get $ux) (local.get $k)))
      (f32.add (f32.mul (local.get $ux) (f32.const 8)) (f32.mul (local.get $uy) (local.get $k)))
      (f32.const -3))
    ;; Facing the tangent (-uy, ux): the quaternion (0, 0, sin, 1 + cos), normalised by the
    ;; region; undefined when facing straight back along x, which the guard skips.
    (if (f32.gt (f32.sub (f32.const 1) (local.get $uy)) (f32.const 0.001))
      (then (call $set_rot (f32.const 0) (f32.const 0) (local.get $ux) (f32.sub (f32.const 1) (local.get $uy)))))
    ;; A lap ends each time it crosses the line east of the centre, going north.
    (if (i32.and (global.get $was_south)
                 (i32.and (f32.ge (local.get $ry) (f32.const 0)) (f32.gt (local.get $rx) (f32.const 0))))
      (then
        (global.set $laps (i32.add (global.get $laps) (i32.const 1)))
        (call $region_say (i32.const 7) (i32.const 256) (i32.const 3))))
    (global.set $was_south (f32.lt (local.get $ry) (f32.const 0))))
)
