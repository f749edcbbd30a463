;; Hostile: a touch never returns. Fuel (or the tick's time budget) must stop it.
(module
  (memory 1 1)
  (func (export "touch") (param i64)
    (loop $forever (br $forever))))
