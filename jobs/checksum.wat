;; checksum: the 64-bit FNV-1a hash of the input, as 16 lowercase hex digits and a
;; newline (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
;;
;; The job ABI (jobs/host.py): `alloc(n) -> ptr`, `run(ptr, len) -> (out_ptr << 32) |
;; out_len`.
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

  (func (export "run") (param $p i32) (param $n i32) (result i64)
    (local $i i32) (local $h i64) (local $buf i32) (local $nib i32)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $h (i64.mul
          (i64.xor (local.get $h)
                   (i64.extend_i32_u (i32.load8_u (i32.add (local.get $p) (local.get $i)))))
          (i64.const 0x100000001b3)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.set $buf (call $alloc (i32.const 17)))
    (local.set $i (i32.const 0))
    (loop $hex
      (local.set $nib (i32.wrap_i64 (i64.and
        (i64.shr_u (local.get $h) (i64.extend_i32_u
          (i32.sub (i32.const 60) (i32.mul (local.get $i) (i32.const 4)))))
        (i64.const 15))))
      (i32.store8 (i32.add (local.get $buf) (local.get $i))
        (select (i32.add (i32.const 48) (local.get $nib))
                (i32.add (i32.const 87) (local.get $nib))
                (i32.lt_u (local.get $nib) (i32.const 10))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $hex (i32.lt_u (local.get $i) (i32.const 16))))
    (i32.store8 (i32.add (local.get $buf) (i32.const 16)) (i32.const 10))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $buf)) (i64.const 32)) (i64.const 17))))
