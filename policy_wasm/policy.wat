;; The CAN Swarm envelope policy, ABI version 1 (docs/POLICY.md is the contract).
;;
;; One call per evaluation: the host writes a fixed-layout view of the envelope (and, once
;; per instance, the genesis parameters) into linear memory, calls `evaluate`, and reads
;; back one i32: (verdict << 8) | reason. The function reads memory and never writes it,
;; uses no floats, imports nothing and keeps no state between calls, so the same view
;; gives the same result and the same fuel on every machine.
;;
;; Memory map (little-endian):
;;   0    VIEW    16 x i64, written by the host before every call
;;   128  PARAMS  16 x i64, written by the host once per instance (from genesis)
;;   1024 RULES   16 bytes per verb code 0..31, written by `$init` below (the rule table)
;;
;; The rules, in the order they are checked (the first that fails decides):
;;   1. the verb is known and allowed                        -> reject unknown_kind
;;   2. payload size within the verb's limit                  -> reject payload_too_large
;;   3. list items within the verb's limit                    -> reject too_many_items
;;   4. the verb's required fields are all present            -> reject missing_field
;;   5. NEED: a known task class, verify_bounty <= bounty_cap_<class> -> reject bad_task_class /
;;                                                                bounty_over_cap
;;   6. CHALLENGE: size_bytes <= proof_bytes_max               -> reject proof_too_large
;;   7. ATTEST, ATTEST_PLAN, INVALIDATE: stake >= min_verifier_stake
;;                                                             -> reject stake_required
;;   8. sender rate <= sender_rate_per_s                       -> ignore rate_limited
(module
  (memory (export "memory") 1 1)

  ;; --- view slots (byte offsets) ---------------------------------------------------
  ;;   0 kind            verb code, 1..20 (0: not a verb this ABI knows)
  ;;   8 wire_bytes      size of the whole signed envelope
  ;;  16 payload_bytes   size of the payload's canonical DAG-CBOR encoding
  ;;  24 fields          bit i set = the verb's i-th payload field is present
  ;;  32 items           elements of every list in the payload, added up
  ;;  40 task_class      NEED: 1 simple, 2 complex, 3 critical (0 otherwise)
  ;;  48 bounty          NEED: verify_bounty (0 otherwise)
  ;;  56 proof_bytes     CHALLENGE: size_bytes (0 when absent)
  ;;  64 sender_stake    the sender's stake, smallest unit
  ;;  72 sender_rate     the sender's envelopes in the last second, this one included
  ;; --- params slots (byte offsets) -------------------------------------------------
  ;; 128 bounty_cap_simple   136 bounty_cap_complex   144 bounty_cap_critical
  ;; 152 proof_bytes_max     160 min_verifier_stake   168 sender_rate_per_s

  ;; Rule record flags.
  ;;   1 allowed   2 stake required   4 bounty capped by class   8 proof size capped

  ;; Reasons (the low byte of the result); verdicts (the next byte): 0 accept,
  ;; 1 reject, 2 ignore.
  ;;   0 ok  1 unknown_kind  2 payload_too_large  3 too_many_items  4 missing_field
  ;;   5 bad_task_class  6 bounty_over_cap  7 proof_too_large  8 stake_required
  ;;   9 rate_limited

  (func $rule (param $kind i32) (param $payload_bytes_max i32) (param $items_max i32)
              (param $required i32) (param $flags i32)
    (local $at i32)
    (local.set $at (i32.add (i32.const 1024) (i32.shl (local.get $kind) (i32.const 4))))
    (i32.store offset=0 (local.get $at) (local.get $payload_bytes_max))
    (i32.store offset=4 (local.get $at) (local.get $items_max))
    (i32.store offset=8 (local.get $at) (local.get $required))
    (i32.store offset=12 (local.get $at) (local.get $flags)))

  ;; The rule table: verb code, payload bytes max, list items max, required-field mask
  ;; (bits per docs/POLICY.md), flags. Codes not listed stay zero: not allowed.
  (func $init
    ;; task lifecycle
    (call $rule (i32.const 1) (i32.const 4096) (i32.const 32) (i32.const 3) (i32.const 5))     ;; NEED
    (call $rule (i32.const 2) (i32.const 16384) (i32.const 160) (i32.const 31) (i32.const 1))  ;; PROPOSE
    (call $rule (i32.const 3) (i32.const 32768) (i32.const 256) (i32.const 15) (i32.const 1))  ;; DECIDE
    (call $rule (i32.const 4) (i32.const 1024) (i32.const 0) (i32.const 7) (i32.const 1))      ;; CLAIM
    (call $rule (i32.const 5) (i32.const 512) (i32.const 0) (i32.const 7) (i32.const 1))       ;; HEARTBEAT
    (call $rule (i32.const 6) (i32.const 4096) (i32.const 64) (i32.const 7) (i32.const 1))     ;; COMMIT
    (call $rule (i32.const 7) (i32.const 512) (i32.const 0) (i32.const 7) (i32.const 3))       ;; ATTEST
    (call $rule (i32.const 8) (i32.const 512) (i32.const 0) (i32.const 3) (i32.const 1))       ;; FINALIZE
    (call $rule (i32.const 9) (i32.const 1024) (i32.const 0) (i32.const 3) (i32.const 1))      ;; YIELD
    (call $rule (i32.const 10) (i32.const 512) (i32.const 0) (i32.const 7) (i32.const 1))      ;; RELEASE
    ;; planning
    (call $rule (i32.const 11) (i32.const 16384) (i32.const 128) (i32.const 3) (i32.const 1))  ;; UPDATE_PLAN
    (call $rule (i32.const 12) (i32.const 512) (i32.const 0) (i32.const 7) (i32.const 3))      ;; ATTEST_PLAN
    ;; challenges (CHALLENGE must declare size_bytes, bit 5, so its proof can be capped)
    (call $rule (i32.const 13) (i32.const 1024) (i32.const 0) (i32.const 63) (i32.const 9))    ;; CHALLENGE
    (call $rule (i32.const 14) (i32.const 4096) (i32.const 64) (i32.const 15) (i32.const 3))   ;; INVALIDATE
    ;; ledger and staking
    (call $rule (i32.const 15) (i32.const 512) (i32.const 0) (i32.const 27) (i32.const 1))      ;; TRANSFER
    (call $rule (i32.const 16) (i32.const 128) (i32.const 0) (i32.const 7) (i32.const 1))       ;; STAKE
    (call $rule (i32.const 17) (i32.const 128) (i32.const 0) (i32.const 7) (i32.const 1))       ;; UNSTAKE
    (call $rule (i32.const 18) (i32.const 64) (i32.const 0) (i32.const 3) (i32.const 1))        ;; COMPLETE_UNBONDING
    (call $rule (i32.const 19) (i32.const 4096) (i32.const 32) (i32.const 63) (i32.const 1))    ;; POOL_REGISTER
    (call $rule (i32.const 20) (i32.const 64) (i32.const 0) (i32.const 3) (i32.const 1))        ;; POOL_LEAVE
    ;; a challenger takes back its challenge
    (call $rule (i32.const 21) (i32.const 512) (i32.const 0) (i32.const 3) (i32.const 1)))      ;; WITHDRAW
  (start $init)

  (func $reject (param $reason i32) (result i32)
    (i32.or (i32.const 256) (local.get $reason)))

  (func (export "abi_version") (result i32)
    (i32.const 1))

  (func (export "evaluate") (result i32)
    (local $kind i64)
    (local $rule i32)
    (local $flags i32)
    (local $required i64)
    (local $class i64)
    ;; 1. known and allowed. The kind is compared as i64 before it indexes the table, so
    ;; no value the host writes can read outside it.
    (local.set $kind (i64.load (i32.const 0)))
    (if (i64.gt_u (local.get $kind) (i64.const 31))
      (then (return (call $reject (i32.const 1)))))
    (local.set $rule (i32.add (i32.const 1024)
                              (i32.shl (i32.wrap_i64 (local.get $kind)) (i32.const 4))))
    (local.set $flags (i32.load offset=12 (local.get $rule)))
    (if (i32.eqz (i32.and (local.get $flags) (i32.const 1)))
      (then (return (call $reject (i32.const 1)))))
    ;; 2. payload size
    (if (i64.gt_u (i64.load (i32.const 16)) (i64.load32_u offset=0 (local.get $rule)))
      (then (return (call $reject (i32.const 2)))))
    ;; 3. list items
    (if (i64.gt_u (i64.load (i32.const 32)) (i64.load32_u offset=4 (local.get $rule)))
      (then (return (call $reject (i32.const 3)))))
    ;; 4. required fields
    (local.set $required (i64.load32_u offset=8 (local.get $rule)))
    (if (i64.ne (i64.and (i64.load (i32.const 24)) (local.get $required)) (local.get $required))
      (then (return (call $reject (i32.const 4)))))
    ;; 5. bounty cap by task class: params 128 + 8 * (class - 1)
    (if (i32.and (local.get $flags) (i32.const 4))
      (then
        (local.set $class (i64.load (i32.const 40)))
        (if (i32.or (i64.eqz (local.get $class)) (i64.gt_u (local.get $class) (i64.const 3)))
          (then (return (call $reject (i32.const 5)))))
        (if (i64.gt_u (i64.load (i32.const 48))
                      (i64.load (i32.add (i32.const 120)
                                         (i32.shl (i32.wrap_i64 (local.get $class))
                                                  (i32.const 3)))))
          (then (return (call $reject (i32.const 6)))))))
    ;; 6. proof size
    (if (i32.and (local.get $flags) (i32.const 8))
      (then
        (if (i64.gt_u (i64.load (i32.const 56)) (i64.load (i32.const 152)))
          (then (return (call $reject (i32.const 7)))))))
    ;; 7. stake
    (if (i32.and (local.get $flags) (i32.const 2))
      (then
        (if (i64.lt_u (i64.load (i32.const 64)) (i64.load (i32.const 160)))
          (then (return (call $reject (i32.const 8)))))))
    ;; 8. sender rate: over the limit is not the forwarder's fault, so ignore, not reject
    (if (i64.gt_u (i64.load (i32.const 72)) (i64.load (i32.const 168)))
      (then (return (i32.const 521))))  ;; (2 << 8) | 9
    (i32.const 0))
)
