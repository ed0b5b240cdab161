;; verify_policy: does a result contain a byte string its NEED's content policy denies?
;;
;; A NEED may list strings its result must not contain (`deny`). The proof names one
;; and the offset where the result holds it, so the check reads that many bytes of the
;; result whatever its size. The frame (jobs/proofs.py), bytes:
;;
;;   0  u8  n: the denied string's length, 1 to 64
;;   1  the denied string (n bytes), then the result's bytes from the offset on (n of
;;      them, fewer where the result ends sooner)
;;
;; verify(ptr, len) answers 1 when the result holds the string there, 0 when it does
;; not, -1 for a frame that does not fit this layout.
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

  (func (export "verify") (param $p i32) (param $len i32) (result i32)
    (local $n i32) (local $i i32)
    (if (i32.lt_u (local.get $len) (i32.const 1)) (then (return (i32.const -1))))
    (local.set $n (i32.load8_u (local.get $p)))
    (if (i32.or (i32.eqz (local.get $n))
                (i32.or (i32.gt_u (local.get $n) (i32.const 64))
                        (i32.gt_u (local.get $len)
                                  (i32.add (i32.const 1) (i32.shl (local.get $n) (i32.const 1))))))
      (then (return (i32.const -1))))
    (if (i32.lt_u (local.get $len) (i32.add (i32.const 1) (local.get $n)))
      (then (return (i32.const -1))))
    ;; The result ends before the string would.
    (if (i32.ne (local.get $len) (i32.add (i32.const 1) (i32.shl (local.get $n) (i32.const 1))))
      (then (return (i32.const 0))))
    (block $differ
      (loop $next
        (if (i32.lt_u (local.get $i) (local.get $n))
          (then
            (br_if $differ (i32.ne
              (i32.load8_u offset=1 (i32.add (local.get $p) (local.get $i)))
              (i32.load8_u offset=1 (i32.add (local.get $p)
                                              (i32.add (local.get $n) (local.get $i))))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next))))
      (return (i32.const 1)))
    (i32.const 0)))
