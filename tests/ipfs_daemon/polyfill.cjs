// Node 20 lacks Promise.withResolvers (Node 22 has it); some js-ipfs 0.66 dependency uses it.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}
