;; A small stateful script that uses most of the ABI. Tests run it through random event
;; sequences to check that capture/restore and deltas reproduce it exactly.
;;
;; State: four mutable globals (not exported: the loader exports them), a log of touches,
;; random words written all over memory chunks 4..15, echo buffers.
(module
  (import "terrane" "say" (func $say (param i32 i32 i32)))
  (import "terrane" "listen" (func $listen (param i32) (result i32)))
  (import "terrane" "unlisten" (func $unlisten (param i32) (result i32)))
  (import "terrane" "send_message" (func $send (param i64 i32 i32)))
  (import "terrane" "set_timer" (func $set_timer (param i64)))
  (import "terrane" "get_pos" (func $get_pos (param i32)))
  (import "terrane" "set_pos" (func $set_pos (param f32 f32 f32)))
  (import "terrane" "set_text" (func $set_text (param i32 i32)))
  (import "terrane" "random_u64" (func $random_u64 (result i64)))
  (import "terrane" "random_f32" (func $random_f32 (result f32)))
  (import "terrane" "read_event" (func $read_event (param i32 i32) (result i32)))
  (memory 1 1)
  (data (i32.const 0) "touched")
  (data (i32.const 16) "changed")
  (global $count (mut i32) (i32.const 0))
  (global $acc (mut i64) (i64.const 0))
  (global $heat (mut f32) (f32.const 0))
  (global $handle (mut i32) (i32.const -1))

  ;; Listen on channel 7 and tick every 100 ms.
  (func (export "start")
    (global.set $handle (call $listen (i32.const 7)))
    (call $set_timer (i64.const 100)))

  ;; Count the touch, store the count at a random word of chunks 4..15, log the toucher in
  ;; chunk 3 and say "touched" on channel 0.
  (func (export "touch") (param $who i64)
    (local $addr i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (local.set $addr
      (i32.add (i32.const 16384)
        (i32.and (i32.wrap_i64 (i64.rem_u (call $random_u64) (i64.const 49152))) (i32.const -4))))
    (i32.store (local.get $addr) (global.get $count))
    (i64.store (i32.const 12288) (local.get $who))
    (call $say (i32.const 0) (i32.const 0) (i32.const 7)))

  ;; Add a random number to $acc and step one metre east.
  (func (export "timer")
    (global.set $acc (i64.add (global.get $acc) (call $random_u64)))
    (call $get_pos (i32.const 32))
    (call $set_pos
      (f32.add (f32.load (i32.const 32)) (f32.const 1))
      (f32.load (i32.const 36))
      (f32.load (i32.const 40))))

  ;; Echo what was heard on the next channel up (the text lands in chunk 1).
  (func (export "listen") (param $ch i32) (param $sender i64) (param $len i32)
    (local $n i32)
    (local.set $n (call $read_event (i32.const 4096) (i32.const 1024)))
    (call $say (i32.add (local.get $ch) (i32.const 1)) (i32.const 4096) (local.get $n)))

  ;; Send a message straight back to its sender (the bytes land in chunk 2).
  (func (export "message") (param $sender i64) (param $len i32)
    (drop (call $read_event (i32.const 8192) (i32.const 1024)))
    (call $send (local.get $sender) (i32.const 8192) (local.get $len)))

  (func (export "collision") (param $other i64) (param $phase i32)
    (global.set $heat (f32.add (global.get $heat) (call $random_f32))))

  ;; Toggle the listen (to the channel numbered by `what`) and set the floating text.
  (func (export "changed") (param $what i32)
    (if (i32.eqz (call $unlisten (global.get $handle)))
      (then (global.set $handle (call $listen (local.get $what))))
      (else (global.set $handle (i32.const -1))))
    (call $set_text (i32.const 16) (i32.const 7)))

  ;; Remember the crossing and stop the timer.
  (func (export "region_cross") (param $from i32) (param $to i32)
    (i32.store (i32.const 48) (local.get $from))
    (i32.store (i32.const 52) (local.get $to))
    (call $set_timer (i64.const 0))))
