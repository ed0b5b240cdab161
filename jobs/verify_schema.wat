;; verify_schema: does a result break its NEED's output schema where the proof says?
;;
;; The proof names a witness, so the check reads a few bytes whatever the result's size:
;; either the result's length (over the schema's maximum, or empty where digits are
;; required) or one offset, with the bytes around it. The frame (jobs/proofs.py builds
;; it from the result's bytes), little-endian:
;;
;;   0  u8  format: 0 bytes, 1 utf8, 2 uint, 3 hex
;;   1  u8  kind: 0 the length, 1 the byte at `offset`
;;   2  u8  before: the window's bytes before `offset`, min(offset, 3)
;;   3  u8  window length: before + min(length - offset, 4)
;;   4  u64 the schema's max_bytes (0: none)
;;  12  u64 the result's length
;;  20  u64 offset
;;  28  the window: result[offset - before : offset - before + window length]
;;
;; verify(ptr, len) answers 1 when the result breaks the schema there, 0 when it does
;; not, -1 for a frame that does not fit this layout.
;;
;; UTF-8 (Unicode Table 3-7) is self-synchronising: every byte outside 0x80-0xBF starts
;; a sequence whose length its first byte tells. So text is ill-formed exactly when some
;; offset holds a first byte that is not allowed, or starts a sequence that is cut short
;; or has a wrong continuation byte, or holds a continuation byte that the nearest first
;; byte at most 3 before it does not reach. Three bytes back and four on decide it.
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

  (func $cont (param $b i32) (result i32)
    (i32.eq (i32.and (local.get $b) (i32.const 0xC0)) (i32.const 0x80)))

  ;; How many bytes the sequence a first byte starts has; 0 for a byte no sequence
  ;; starts with (a continuation byte, 0xC0, 0xC1, 0xF5-0xFF).
  (func $seqlen (param $b i32) (result i32)
    (if (i32.lt_u (local.get $b) (i32.const 0x80)) (then (return (i32.const 1))))
    (if (i32.lt_u (local.get $b) (i32.const 0xC2)) (then (return (i32.const 0))))
    (if (i32.lt_u (local.get $b) (i32.const 0xE0)) (then (return (i32.const 2))))
    (if (i32.lt_u (local.get $b) (i32.const 0xF0)) (then (return (i32.const 3))))
    (if (i32.lt_u (local.get $b) (i32.const 0xF5)) (then (return (i32.const 4))))
    (i32.const 0))

  ;; 1 when the UTF-8 text is ill-formed at the window's byte `before`.
  (func $utf8 (param $w i32) (param $before i32) (param $wlen i32) (result i32)
    (local $c i32) (local $d i32) (local $x i32) (local $n i32) (local $lo i32)
    (local $hi i32) (local $i i32)
    (local.set $c (i32.load8_u (i32.add (local.get $w) (local.get $before))))
    (if (i32.lt_u (local.get $c) (i32.const 0x80)) (then (return (i32.const 0))))
    (if (call $cont (local.get $c))
      (then
        (local.set $d (i32.const 1))
        (loop $back
          (if (i32.gt_u (local.get $d) (local.get $before)) (then (return (i32.const 1))))
          (local.set $x (i32.load8_u
            (i32.add (local.get $w) (i32.sub (local.get $before) (local.get $d)))))
          (if (call $cont (local.get $x))
            (then
              (local.set $d (i32.add (local.get $d) (i32.const 1)))
              (br $back))))
        (return (i32.le_u (call $seqlen (local.get $x)) (local.get $d)))))
    (local.set $n (call $seqlen (local.get $c)))
    (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
    (if (i32.lt_u (i32.sub (local.get $wlen) (local.get $before)) (local.get $n))
      (then (return (i32.const 1))))
    (local.set $lo (i32.const 0x80))
    (local.set $hi (i32.const 0xBF))
    (if (i32.eq (local.get $c) (i32.const 0xE0)) (then (local.set $lo (i32.const 0xA0))))
    (if (i32.eq (local.get $c) (i32.const 0xED)) (then (local.set $hi (i32.const 0x9F))))
    (if (i32.eq (local.get $c) (i32.const 0xF0)) (then (local.set $lo (i32.const 0x90))))
    (if (i32.eq (local.get $c) (i32.const 0xF4)) (then (local.set $hi (i32.const 0x8F))))
    (local.set $i (i32.const 1))
    (loop $next
      (if (i32.lt_u (local.get $i) (local.get $n))
        (then
          (local.set $x (i32.load8_u (i32.add (local.get $w)
            (i32.add (local.get $before) (local.get $i)))))
          (if (i32.or (i32.lt_u (local.get $x) (local.get $lo))
                      (i32.gt_u (local.get $x) (local.get $hi)))
            (then (return (i32.const 1))))
          (local.set $lo (i32.const 0x80))
          (local.set $hi (i32.const 0xBF))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next))))
    (i32.const 0))

  (func (export "verify") (param $p i32) (param $len i32) (result i32)
    (local $format i32) (local $kind i32) (local $before i32) (local $wlen i32)
    (local $max i64) (local $length i64) (local $offset i64) (local $rest i64)
    (local $c i32)
    (if (i32.lt_u (local.get $len) (i32.const 28)) (then (return (i32.const -1))))
    (local.set $format (i32.load8_u (local.get $p)))
    (local.set $kind (i32.load8_u offset=1 (local.get $p)))
    (local.set $before (i32.load8_u offset=2 (local.get $p)))
    (local.set $wlen (i32.load8_u offset=3 (local.get $p)))
    (local.set $max (i64.load offset=4 (local.get $p)))
    (local.set $length (i64.load offset=12 (local.get $p)))
    (local.set $offset (i64.load offset=20 (local.get $p)))
    (if (i32.or (i32.gt_u (local.get $format) (i32.const 3))
                (i32.ne (local.get $len) (i32.add (i32.const 28) (local.get $wlen))))
      (then (return (i32.const -1))))
    (if (i32.eqz (local.get $kind))
      (then
        (if (i32.and (i64.ne (local.get $max) (i64.const 0))
                     (i64.gt_u (local.get $length) (local.get $max)))
          (then (return (i32.const 1))))
        (return (i32.and (i32.ge_u (local.get $format) (i32.const 2))
                         (i64.eqz (local.get $length))))))
    (if (i32.ne (local.get $kind) (i32.const 1)) (then (return (i32.const -1))))
    ;; The window must be the one the layout describes.
    (if (i64.ge_u (local.get $offset) (local.get $length)) (then (return (i32.const -1))))
    (if (i64.ne (i64.extend_i32_u (local.get $before))
                (select (local.get $offset) (i64.const 3)
                        (i64.lt_u (local.get $offset) (i64.const 3))))
      (then (return (i32.const -1))))
    (local.set $rest (i64.sub (local.get $length) (local.get $offset)))
    (if (i64.ne (i64.extend_i32_u (i32.sub (local.get $wlen) (local.get $before)))
                (select (local.get $rest) (i64.const 4)
                        (i64.lt_u (local.get $rest) (i64.const 4))))
      (then (return (i32.const -1))))
    (if (i32.eqz (local.get $format)) (then (return (i32.const 0))))
    (if (i32.eq (local.get $format) (i32.const 1))
      (then (return (call $utf8 (i32.add (local.get $p) (i32.const 28))
                                (local.get $before) (local.get $wlen)))))
    ;; uint and hex: digits (and a-f for hex), then at most one newline, last.
    (local.set $c (i32.load8_u (i32.add (i32.add (local.get $p) (i32.const 28))
                                        (local.get $before))))
    (if (i32.le_u (i32.sub (local.get $c) (i32.const 48)) (i32.const 9))
      (then (return (i32.const 0))))
    (if (i32.and (i32.eq (local.get $format) (i32.const 3))
                 (i32.le_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 5)))
      (then (return (i32.const 0))))
    (if (i32.and (i32.eq (local.get $c) (i32.const 10))
                 (i32.and (i64.eq (local.get $offset)
                                  (i64.sub (local.get $length) (i64.const 1)))
                          (i64.ne (local.get $offset) (i64.const 0))))
      (then (return (i32.const 0))))
    (i32.const 1)))
