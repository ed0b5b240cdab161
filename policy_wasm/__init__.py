"""The envelope policy: its WebAssembly source and committed module, the build step, the
ABI (`abi`) and the wasmtime host (`host`). docs/POLICY.md describes all of it."""
