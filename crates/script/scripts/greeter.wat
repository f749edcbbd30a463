;; The example of docs/scripting.md: greets whoever touches it, answers "ping" on channel 5
;; with "pong", and reports what its sensor sees.
(module
  (import "terrane" "say" (func $say (param i32 i32 i32)))
  (import "terrane" "listen" (func $listen (param i32) (result i32)))
  (import "terrane" "read_event" (func $read_event (param i32 i32) (result i32)))
  (import "terrane" "sensor" (func $sensor (param i32 f32 i32 i32) (result i32)))
  (import "terrane" "region_say" (func $region_say (param i32 i32 i32)))
  (memory 1 1)
  (data (i32.const 0) "hello")
  (data (i32.const 8) "pong")
  (data (i32.const 16) "ping")

  (func (export "start")
    (drop (call $listen (i32.const 5))))

  (func (export "touch") (param $who i64)
    (local $n i32)
    (call $say (i32.const 0) (i32.const 0) (i32.const 5))
    ;; Up to 4 avatars and objects within 30 m, records at 1024. The number found is said
    ;; region-wide on channel 9 as one byte ("0" + n).
    (local.set $n (call $sensor (i32.const 3) (f32.const 30) (i32.const 1024) (i32.const 4)))
    (i32.store8 (i32.const 32) (i32.add (i32.const 48) (local.get $n)))
    (call $region_say (i32.const 9) (i32.const 32) (i32.const 1)))

  (func (export "listen") (param $ch i32) (param $sender i64) (param $len i32)
    ;; Answer only an exact "ping".
    (if (i32.ne (local.get $len) (i32.const 4)) (then (return)))
    (drop (call $read_event (i32.const 64) (i32.const 4)))
    (if (i32.eq (i32.load (i32.const 64)) (i32.load (i32.const 16)))
      (then (call $say (local.get $ch) (i32.const 8) (i32.const 4))))))
