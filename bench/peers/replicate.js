// Live, continuous PouchDB replication from one server's database to
// another's, as a third process (PouchDB's own replicator, HTTP on both
// sides):
//
//   node replicate.js SOURCE_URL TARGET_URL BATCH_SIZE
//
// Creates both databases if missing, prints "replicating" on stdout once
// the replication is running, and exits non-zero on a replication error.
'use strict';
const [source, target, batch] = process.argv.slice(2);
if (!source || !target || !batch) {
  console.error('usage: node replicate.js SOURCE_URL TARGET_URL BATCH_SIZE');
  process.exit(2);
}
const PouchDB = require('pouchdb');

(async () => {
  const a = new PouchDB(source);
  const b = new PouchDB(target);
  // Creates the databases (PouchDB's HTTP adapter does on first use).
  await a.info();
  await b.info();
  const rep = PouchDB.replicate(a, b, {
    live: true,
    retry: true,
    batch_size: Number(batch),
  });
  rep.on('error', (e) => {
    console.error(`replication failed: ${e && e.message}`);
    process.exit(1);
  });
  console.log('replicating');
})().catch((e) => {
  console.error(`replicate.js: ${e && e.message}`);
  process.exit(1);
});
