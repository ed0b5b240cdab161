;; verify_citation: does a result leave out a CID its NEED asks it to cite?
;;
;; A result cites a CID when the CID's text (its canonical base32 form, as `swarm-node`
;; prints it) appears somewhere in the result's bytes. Absence has no short witness, so
;; this reads the whole result, once: shift-and (bitap) with the text's positions as the
;; bits of one i64, so a result crafted full of near misses costs what any other result
;; of its size costs. A NEED that asks for citations bounds its output
;; (`CITED_OUTPUT_BYTES_MAX`, protocol/output_schema.py) so that the search fits the fuel.
;; The frame (jobs/proofs.py), bytes:
;;
;;   0  u8  n: the cited CID's text length, 1 to 60
;;   1  the CID's text (n bytes), then the result (the rest)
;;
;; verify(ptr, len) answers 1 when the text is nowhere in the result, 0 when it is
;; there, -1 for a frame that does not fit this layout. Bytes 0-2047 of memory hold the
;; 256 masks: bit i of byte c's mask is set when the text's byte i is c.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 2048))

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

  ;; Each byte's step is D = ((D << 1) | 1) & mask[byte]; D's bit i: the text's first
  ;; i + 1 bytes end here.
  (func (export "verify") (param $p i32) (param $len i32) (result i32)
    (local $n i32) (local $i i32) (local $at i32) (local $end i32) (local $d i64)
    (local $goal i64) (local $slot i32) (local $sticky i64)
    (if (i32.lt_u (local.get $len) (i32.const 1)) (then (return (i32.const -1))))
    (local.set $n (i32.load8_u (local.get $p)))
    (if (i32.or (i32.eqz (local.get $n))
                (i32.or (i32.gt_u (local.get $n) (i32.const 60))
                        (i32.gt_u (i32.add (i32.const 1) (local.get $n)) (local.get $len))))
      (then (return (i32.const -1))))
    ;; Bits n-1 and up: a match sets bit n-1, and the sticky bits n..63 keep it for
    ;; at least three more bytes, so the scan looks once every four.
    (local.set $goal (i64.shl (i64.const -1)
                              (i64.extend_i32_u (i32.sub (local.get $n) (i32.const 1)))))
    (local.set $sticky (i64.shl (i64.const -1) (i64.extend_i32_u (local.get $n))))
    (loop $fill
      (i64.store (local.get $slot) (local.get $sticky))
      (local.set $slot (i32.add (local.get $slot) (i32.const 8)))
      (br_if $fill (i32.lt_u (local.get $slot) (i32.const 2048))))
    (loop $mask
      (local.set $slot (i32.shl (i32.load8_u offset=1 (i32.add (local.get $p) (local.get $i)))
                                (i32.const 3)))
      (i64.store (local.get $slot)
        (i64.or (i64.load (local.get $slot))
                (i64.shl (i64.const 1) (i64.extend_i32_u (local.get $i)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $mask (i32.lt_u (local.get $i) (local.get $n))))
    (local.set $at (i32.add (i32.add (local.get $p) (i32.const 1)) (local.get $n)))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $four_done
      (loop $four
        (br_if $four_done (i32.gt_u (i32.add (local.get $at) (i32.const 4)) (local.get $end)))
        (local.set $d (i64.and (i64.or (i64.shl (local.get $d) (i64.const 1)) (i64.const 1))
          (i64.load (i32.shl (i32.load8_u (local.get $at)) (i32.const 3)))))
        (local.set $d (i64.and (i64.or (i64.shl (local.get $d) (i64.const 1)) (i64.const 1))
          (i64.load (i32.shl (i32.load8_u offset=1 (local.get $at)) (i32.const 3)))))
        (local.set $d (i64.and (i64.or (i64.shl (local.get $d) (i64.const 1)) (i64.const 1))
          (i64.load (i32.shl (i32.load8_u offset=2 (local.get $at)) (i32.const 3)))))
        (local.set $d (i64.and (i64.or (i64.shl (local.get $d) (i64.const 1)) (i64.const 1))
          (i64.load (i32.shl (i32.load8_u offset=3 (local.get $at)) (i32.const 3)))))
        (if (i64.ne (i64.and (local.get $d) (local.get $goal)) (i64.const 0))
          (then (return (i32.const 0))))
        (local.set $at (i32.add (local.get $at) (i32.const 4)))
        (br $four)))
    (block $done
      (loop $one
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $d (i64.and (i64.or (i64.shl (local.get $d) (i64.const 1)) (i64.const 1))
          (i64.load (i32.shl (i32.load8_u (local.get $at)) (i32.const 3)))))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $one)))
    (i64.eqz (i64.and (local.get $d) (local.get $goal)))))
