;; verify_mismatch: is a result not what its job gives on its input?
;;
;; The judge re-runs the job (jobs/host.py, under the job's own fuel) and hands over both
;; output CIDs; the claim holds when they differ, or when the job fails on the input
;; (then no result is right). The frame (jobs/proofs.py), bytes:
;;
;;   0  u8  status: 0 the job ran, 1 it failed (trapped, ran out of fuel, bad output)
;;   1  u8  n: the committed result's CID length
;;   2  the committed result's CID (n bytes), then the re-run output's CID (the rest;
;;      none when the job failed)
;;
;; verify(ptr, len) answers 1 when the claim holds, 0 when it does not, -1 for a frame
;; that does not fit this layout.
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
    (local $status i32) (local $n i32) (local $m i32) (local $i i32)
    (if (i32.lt_u (local.get $len) (i32.const 2)) (then (return (i32.const -1))))
    (local.set $status (i32.load8_u (local.get $p)))
    (local.set $n (i32.load8_u offset=1 (local.get $p)))
    (if (i32.or (i32.gt_u (local.get $status) (i32.const 1))
                (i32.or (i32.eqz (local.get $n))
                        (i32.gt_u (i32.add (i32.const 2) (local.get $n)) (local.get $len))))
      (then (return (i32.const -1))))
    (local.set $m (i32.sub (local.get $len) (i32.add (i32.const 2) (local.get $n))))
    (if (local.get $status)
      (then (return (select (i32.const 1) (i32.const -1) (i32.eqz (local.get $m))))))
    (if (i32.eqz (local.get $m)) (then (return (i32.const -1))))
    (if (i32.ne (local.get $m) (local.get $n)) (then (return (i32.const 1))))
    (block $differ
      (loop $next
        (if (i32.lt_u (local.get $i) (local.get $n))
          (then
            (br_if $differ (i32.ne
              (i32.load8_u offset=2 (i32.add (local.get $p) (local.get $i)))
              (i32.load8_u offset=2 (i32.add (local.get $p)
                                              (i32.add (local.get $n) (local.get $i))))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next))))
      (return (i32.const 0)))
    (i32.const 1)))
