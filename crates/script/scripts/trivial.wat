;; The smallest script: every event handler exists and returns at once.
;; Used by the benchmark to measure the engine's own cost per event.
(module
  (memory 1 1)
  (func (export "start"))
  (func (export "timer"))
  (func (export "touch") (param i64))
  (func (export "listen") (param i32 i64 i32))
  (func (export "message") (param i64 i32))
  (func (export "collision") (param i64 i32))
  (func (export "changed") (param i32))
  (func (export "region_cross") (param i32 i32)))
