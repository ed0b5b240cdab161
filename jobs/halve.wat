;; halve: a grayscale image at half its width and height.
;;
;; Input: a binary PGM ("P5"), 8-bit: "P5", then width, height and maxval as decimal
;; numbers of 1 to 5 digits, each after one or more ASCII whitespace bytes (9-13, 32; no
;; comments), then exactly one whitespace byte and width x height pixel bytes (bytes past
;; them are ignored). maxval must be 255, width and height at least 2. Output: the PGM
;; "P5\n<width/2> <height/2>\n255\n" and its pixels, each the mean (rounded down) of a
;; 2x2 block; an odd last column or row is dropped. Any other input traps. The job ABI
;; (jobs/host.py): `alloc(n) -> ptr`, `run(ptr, len) -> (out_ptr << 32) | out_len`.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $pos (mut i32) (i32.const 0))

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

  (func $space (param $c i32) (result i32)
    (i32.or (i32.eq (local.get $c) (i32.const 32))
            (i32.and (i32.ge_u (local.get $c) (i32.const 9))
                     (i32.le_u (local.get $c) (i32.const 13)))))

  ;; 1 if the byte at $pos is whitespace (0 past the end).
  (func $at_space (param $p i32) (param $n i32) (result i32)
    (if (result i32) (i32.ge_u (global.get $pos) (local.get $n))
      (then (i32.const 0))
      (else (call $space (i32.load8_u (i32.add (local.get $p) (global.get $pos)))))))

  ;; Whitespace (at least one byte), then a number of 1 to 5 digits; $pos moves past it.
  (func $number (param $p i32) (param $n i32) (result i32)
    (local $start i32) (local $v i32) (local $c i32)
    (if (i32.eqz (call $at_space (local.get $p) (local.get $n))) (then unreachable))
    (block $spaced
      (loop $skip
        (br_if $spaced (i32.eqz (call $at_space (local.get $p) (local.get $n))))
        (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
        (br $skip)))
    (local.set $start (global.get $pos))
    (block $digits
      (loop $next
        (br_if $digits (i32.ge_u (global.get $pos) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (local.get $p) (global.get $pos))))
        (br_if $digits (i32.lt_u (local.get $c) (i32.const 48)))
        (br_if $digits (i32.gt_u (local.get $c) (i32.const 57)))
        (if (i32.ge_u (i32.sub (global.get $pos) (local.get $start)) (i32.const 5))
          (then unreachable))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10))
                               (i32.sub (local.get $c) (i32.const 48))))
        (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
        (br $next)))
    (if (i32.eq (global.get $pos) (local.get $start)) (then unreachable))
    (local.get $v))

  ;; $v in decimal at $at; the address after it.
  (func $decimal (param $at i32) (param $v i32) (result i32)
    (local $len i32) (local $t i32) (local $end i32)
    (local.set $t (local.get $v))
    (local.set $len (i32.const 1))
    (block $counted
      (loop $more
        (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
        (br_if $counted (i32.eqz (local.get $t)))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $more)))
    (local.set $end (i32.add (local.get $at) (local.get $len)))
    (local.set $t (local.get $end))
    (loop $digit
      (local.set $t (i32.sub (local.get $t) (i32.const 1)))
      (i32.store8 (local.get $t)
                  (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (i32.gt_u (local.get $t) (local.get $at))))
    (local.get $end))

  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $w i32) (local $h i32) (local $max i32) (local $raster i32)
    (local $ow i32) (local $oh i32) (local $out i32) (local $at i32)
    (local $x i32) (local $y i32) (local $row0 i32) (local $row1 i32) (local $col i32)
    (if (i32.lt_u (local.get $n) (i32.const 2)) (then unreachable))
    (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 80)) (then unreachable))
    (if (i32.ne (i32.load8_u (i32.add (local.get $p) (i32.const 1))) (i32.const 53))
      (then unreachable))
    (global.set $pos (i32.const 2))
    (local.set $w (call $number (local.get $p) (local.get $n)))
    (local.set $h (call $number (local.get $p) (local.get $n)))
    (local.set $max (call $number (local.get $p) (local.get $n)))
    (if (i32.eqz (call $at_space (local.get $p) (local.get $n))) (then unreachable))
    (local.set $raster (i32.add (local.get $p) (i32.add (global.get $pos) (i32.const 1))))
    (if (i32.ne (local.get $max) (i32.const 255)) (then unreachable))
    (if (i32.lt_u (local.get $w) (i32.const 2)) (then unreachable))
    (if (i32.lt_u (local.get $h) (i32.const 2)) (then unreachable))
    (if (i64.lt_u (i64.extend_i32_u (i32.sub (local.get $n)
                                             (i32.add (global.get $pos) (i32.const 1))))
                  (i64.mul (i64.extend_i32_u (local.get $w)) (i64.extend_i32_u (local.get $h))))
      (then unreachable))
    (local.set $ow (i32.shr_u (local.get $w) (i32.const 1)))
    (local.set $oh (i32.shr_u (local.get $h) (i32.const 1)))
    (local.set $out (call $alloc (i32.add (i32.const 32)
                                          (i32.mul (local.get $ow) (local.get $oh)))))
    (i32.store8 (local.get $out) (i32.const 80))
    (i32.store8 (i32.add (local.get $out) (i32.const 1)) (i32.const 53))
    (i32.store8 (i32.add (local.get $out) (i32.const 2)) (i32.const 10))
    (local.set $at (call $decimal (i32.add (local.get $out) (i32.const 3)) (local.get $ow)))
    (i32.store8 (local.get $at) (i32.const 32))
    (local.set $at (call $decimal (i32.add (local.get $at) (i32.const 1)) (local.get $oh)))
    (i32.store8 (local.get $at) (i32.const 10))
    (i32.store8 (i32.add (local.get $at) (i32.const 1)) (i32.const 50))
    (i32.store8 (i32.add (local.get $at) (i32.const 2)) (i32.const 53))
    (i32.store8 (i32.add (local.get $at) (i32.const 3)) (i32.const 53))
    (i32.store8 (i32.add (local.get $at) (i32.const 4)) (i32.const 10))
    (local.set $at (i32.add (local.get $at) (i32.const 5)))
    (block $rows
      (loop $row
        (br_if $rows (i32.ge_u (local.get $y) (local.get $oh)))
        (local.set $row0 (i32.add (local.get $raster)
                                  (i32.mul (i32.shl (local.get $y) (i32.const 1))
                                           (local.get $w))))
        (local.set $row1 (i32.add (local.get $row0) (local.get $w)))
        (local.set $x (i32.const 0))
        (block $cols
          (loop $pixel
            (br_if $cols (i32.ge_u (local.get $x) (local.get $ow)))
            (local.set $col (i32.shl (local.get $x) (i32.const 1)))
            (i32.store8 (local.get $at)
              (i32.shr_u
                (i32.add
                  (i32.add (i32.load8_u (i32.add (local.get $row0) (local.get $col)))
                           (i32.load8_u (i32.add (i32.add (local.get $row0) (local.get $col))
                                                 (i32.const 1))))
                  (i32.add (i32.load8_u (i32.add (local.get $row1) (local.get $col)))
                           (i32.load8_u (i32.add (i32.add (local.get $row1) (local.get $col))
                                                 (i32.const 1)))))
                (i32.const 2)))
            (local.set $at (i32.add (local.get $at) (i32.const 1)))
            (local.set $x (i32.add (local.get $x) (i32.const 1)))
            (br $pixel)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $row)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $at) (local.get $out))))))
