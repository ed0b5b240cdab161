// Print the CID the js UnixFS importer (ipfs-unixfs-importer, pinned in package.json)
// gives each file, with Kubo's `ipfs add` settings spelled out rather than left to the
// library's defaults (which have changed between releases):
//   CIDv0: cidVersion 0, dag-pb UnixFS "file" leaves, 262144-byte fixed chunks,
//          balanced layout with 174 links per node, single leaf reduced to the root.
//   CIDv1: the same with cidVersion 1 and raw leaves (what `--cid-version 1` implies).
// Usage: node importer.mjs 0|1 CHUNK_BYTES LINKS_MAX FILE [FILE ...]
//   -> one JSON object {file: cid}. Kubo's values are 262144 and 174; generate.py also
//   runs tiny ones (4 and 3) so that small inputs build deep trees.
import { readFileSync } from 'node:fs'
import { importBytes } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const version = Number(process.argv[2])
const chunkSize = Number(process.argv[3])
const maxChildrenPerNode = Number(process.argv[4])
if ((version !== 0 && version !== 1) || !(chunkSize > 0) || !(maxChildrenPerNode > 1)) {
  console.error('usage: node importer.mjs 0|1 CHUNK_BYTES LINKS_MAX FILE [FILE ...]')
  process.exit(2)
}
// Only hashing: blocks are dropped as they are produced.
const blockstore = { put: async (cid) => cid }
const out = {}
for (const name of process.argv.slice(5)) {
  const result = await importBytes(readFileSync(name), blockstore, {
    cidVersion: version,
    rawLeaves: version === 1,
    leafType: 'file',
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode }),
    fieldOrder: 'links-first'
  })
  out[name] = result.cid.toString()
}
console.log(JSON.stringify(out))
