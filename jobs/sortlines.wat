;; sortlines: the input's lines in bytewise order, each ending in a newline.
;;
;; Lines are the input split at "\n", a last empty piece dropped (so "a\nb" and
;; "a\nb\n" are both the lines a, b; empty input has none). A shorter line sorts before
;; a longer one it begins. An insertion sort, stable: meant for small inputs (its fuel
;; grows with the square of the line count). The job ABI (jobs/host.py): `alloc(n) ->
;; ptr`, `run(ptr, len) -> (out_ptr << 32) | out_len`.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  (func $alloc (export "alloc") (param $n i32) (result i32)
    (local $at i32) (local $end i32) (local $pages i32)
    (local.set $at (global.get $heap))
    (local.set $end (i32.add (local.get $at) (local.get $n)))
    (if (i32.lt_u (local.get $end) (local.get $at)) (then unreachable))
    (local.set $pages (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $at))

  ;; 1 if line a sorts before line b.
  (func $less (param $ap i32) (param $al i32) (param $bp i32) (param $bl i32) (result i32)
    (local $i i32) (local $m i32) (local $x i32) (local $y i32)
    (local.set $m (select (local.get $al) (local.get $bl)
                          (i32.lt_u (local.get $al) (local.get $bl))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $m)))
        (local.set $x (i32.load8_u (i32.add (local.get $ap) (local.get $i))))
        (local.set $y (i32.load8_u (i32.add (local.get $bp) (local.get $i))))
        (if (i32.ne (local.get $x) (local.get $y))
          (then (return (i32.lt_u (local.get $x) (local.get $y)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.lt_u (local.get $al) (local.get $bl)))

  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $lines i32) (local $k i32) (local $i i32) (local $start i32) (local $end i32)
    (local $j i32) (local $kp i32) (local $kl i32) (local $slot i32)
    (local $out i32) (local $at i32) (local $total i32) (local $len i32)
    ;; (start, length) of every line, 8 bytes each.
    (local.set $lines (call $alloc (i32.mul (i32.add (local.get $n) (i32.const 1))
                                            (i32.const 8))))
    (local.set $start (local.get $p))
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (local.set $i (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $i)) (i32.const 10))
          (then
            (local.set $slot (i32.add (local.get $lines) (i32.mul (local.get $k) (i32.const 8))))
            (i32.store (local.get $slot) (local.get $start))
            (i32.store offset=4 (local.get $slot) (i32.sub (local.get $i) (local.get $start)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (local.set $start (i32.add (local.get $i) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.lt_u (local.get $start) (local.get $end))
      (then
        (local.set $slot (i32.add (local.get $lines) (i32.mul (local.get $k) (i32.const 8))))
        (i32.store (local.get $slot) (local.get $start))
        (i32.store offset=4 (local.get $slot) (i32.sub (local.get $end) (local.get $start)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))))
    ;; Insertion sort of the k (start, length) pairs.
    (local.set $i (i32.const 1))
    (block $sorted
      (loop $outer
        (br_if $sorted (i32.ge_s (local.get $i) (local.get $k)))
        (local.set $slot (i32.add (local.get $lines) (i32.mul (local.get $i) (i32.const 8))))
        (local.set $kp (i32.load (local.get $slot)))
        (local.set $kl (i32.load offset=4 (local.get $slot)))
        (local.set $j (i32.sub (local.get $i) (i32.const 1)))
        (block $placed
          (loop $inner
            (br_if $placed (i32.lt_s (local.get $j) (i32.const 0)))
            (local.set $slot (i32.add (local.get $lines) (i32.mul (local.get $j) (i32.const 8))))
            (br_if $placed (i32.eqz (call $less (local.get $kp) (local.get $kl)
                                                (i32.load (local.get $slot))
                                                (i32.load offset=4 (local.get $slot)))))
            (i64.store offset=8 (local.get $slot) (i64.load (local.get $slot)))
            (local.set $j (i32.sub (local.get $j) (i32.const 1)))
            (br $inner)))
        (local.set $slot (i32.add (local.get $lines)
                                  (i32.mul (i32.add (local.get $j) (i32.const 1)) (i32.const 8))))
        (i32.store (local.get $slot) (local.get $kp))
        (i32.store offset=4 (local.get $slot) (local.get $kl))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    ;; Every line and its newline.
    (local.set $i (i32.const 0))
    (block $counted
      (loop $count
        (br_if $counted (i32.ge_s (local.get $i) (local.get $k)))
        (local.set $total (i32.add (local.get $total) (i32.add (i32.const 1)
          (i32.load offset=4 (i32.add (local.get $lines) (i32.mul (local.get $i) (i32.const 8)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $count)))
    (local.set $out (call $alloc (local.get $total)))
    (local.set $at (local.get $out))
    (local.set $i (i32.const 0))
    (block $written
      (loop $write
        (br_if $written (i32.ge_s (local.get $i) (local.get $k)))
        (local.set $slot (i32.add (local.get $lines) (i32.mul (local.get $i) (i32.const 8))))
        (local.set $len (i32.load offset=4 (local.get $slot)))
        (memory.copy (local.get $at) (i32.load (local.get $slot)) (local.get $len))
        (local.set $at (i32.add (local.get $at) (local.get $len)))
        (i32.store8 (local.get $at) (i32.const 10))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $write)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (local.get $total)))))
