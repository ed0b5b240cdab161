;; wordcount: the number of words in the input, as decimal digits and a newline.
;;
;; A word is a run of bytes other than ASCII whitespace (9-13 and 32), as Python's
;; `len(data.split())` counts them. The job ABI (jobs/host.py): `alloc(n) -> ptr`
;; hands the host room for the input, `run(ptr, len) -> (out_ptr << 32) | out_len`.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))

  ;; A bump allocator: the instance lives for one run.
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

  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $i i32) (local $in_word i32) (local $count i32) (local $c i32)
    (local $buf i32) (local $at i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.load8_u (i32.add (local.get $p) (local.get $i))))
        (if (call $space (local.get $c))
          (then (local.set $in_word (i32.const 0)))
          (else
            (if (i32.eqz (local.get $in_word))
              (then (local.set $count (i32.add (local.get $count) (i32.const 1)))))
            (local.set $in_word (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; Digits backwards into a 16-byte buffer ending in the newline.
    (local.set $buf (call $alloc (i32.const 16)))
    (local.set $at (i32.add (local.get $buf) (i32.const 15)))
    (i32.store8 (local.get $at) (i32.const 10))
    (loop $digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at)
                  (i32.add (i32.const 48) (i32.rem_u (local.get $count) (i32.const 10))))
      (local.set $count (i32.div_u (local.get $count) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $count) (i32.const 0))))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $at)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (i32.add (local.get $buf) (i32.const 16))
                                       (local.get $at))))))
