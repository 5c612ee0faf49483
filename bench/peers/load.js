// The PouchDB workload of orgsync-bench, against two servers that a
// replicator (replicate.js) keeps in sync A -> B:
//
//   node load.js A_DB_URL B_DB_URL RECORDS LATENCY_SAMPLES WARMUP
//
// 1. Throughput: RECORDS contacts of exactly 262 bytes of JSON (the size of
//    orgsync's replication scenario's records) written to A with bulkDocs,
//    1,000 at a time; the clock runs from the first write until B's
//    doc_count reaches RECORDS.
// 2. Latency: WARMUP + LATENCY_SAMPLES single writes (PUT) on A, one at a
//    time, each timed until B's continuous _changes feed reports its id.
//
// Prints one JSON line on stdout: {"record_len", "write_secs", "secs",
// "latency_ms": [...]}; progress on stderr. Exits non-zero on any error.
'use strict';
const http = require('http');
const PouchDB = require('pouchdb');

const RECORD_LEN = 262;
const BATCH = 1000;

const [aUrl, bUrl, recordsArg, samplesArg, warmupArg] = process.argv.slice(2);
const records = Number(recordsArg);
const samples = Number(samplesArg);
const warmup = Number(warmupArg);
if (!aUrl || !bUrl || !(records > 0) || !(samples > 0) || !(warmup >= 0)) {
  console.error('usage: node load.js A_DB_URL B_DB_URL RECORDS LATENCY_SAMPLES WARMUP');
  process.exit(2);
}

const progress = (s) => console.error(`orgsync-bench progress: ${s}`);
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

// A contact like orgsync's (cluster::contact), padded to RECORD_LEN bytes.
function contact(i) {
  const n = String(i);
  const doc = {
    _id: `contact-${n.padStart(12, '0')}`,
    kind: 'contact',
    first_name: `First${n.padStart(8, '0')}`,
    last_name: `Lastname${n.padStart(8, '0')}`,
    email: `person${n.padStart(15, '0')}@example.org`,
    phone: `+44 20 ${n.padStart(10, '0')}`,
    role: 'Procurement lead',
    note: '',
  };
  const short = RECORD_LEN - Buffer.byteLength(JSON.stringify(doc));
  if (short < 0) throw new Error(`contact ${i} is longer than ${RECORD_LEN} bytes`);
  doc.note = 'x'.repeat(short);
  return doc;
}

// B's continuous changes feed, raw (one JSON object per line), so the
// latency is the server's feed and not a client's polling loop.
function changesFeed(dbUrl, onId) {
  return new Promise((resolve, reject) => {
    const u = new URL(`${dbUrl}/_changes?feed=continuous&since=now&heartbeat=5000`);
    const req = http.get(u, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`B's _changes answered ${res.statusCode}`));
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) {
            const change = JSON.parse(line);
            if (change.id) onId(change.id);
          }
        }
      });
      resolve(req);
    });
    req.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const a = new PouchDB(aUrl);
  const b = new PouchDB(bUrl);

  progress(`PouchDB: ${records} contacts to be on B`);
  const start = now();
  for (let i = 0; i < records; i += BATCH) {
    const docs = [];
    for (let j = i; j < Math.min(i + BATCH, records); j++) docs.push(contact(j));
    const res = await a.bulkDocs(docs);
    const bad = res.find((r) => r.error);
    if (bad) throw new Error(`bulkDocs on A: ${bad.id}: ${bad.reason || bad.error}`);
  }
  const written = now();
  let count = 0;
  let last = 0;
  while (count < records) {
    count = (await b.info()).doc_count;
    if (now() - last > 5000) {
      progress(`PouchDB: ${count} of ${records} contacts on B`);
      last = now();
    }
    if (count < records) await sleep(20);
  }
  const done = now();

  progress(`PouchDB: ${warmup + samples} single changes to reach B's _changes feed`);
  let waiting = null;
  const feed = await changesFeed(bUrl, (id) => {
    if (waiting && waiting.id === id) {
      const w = waiting;
      waiting = null;
      w.resolve(now());
    }
  });
  const latency = [];
  for (let i = 0; i < warmup + samples; i++) {
    const id = `latency-${String(i).padStart(6, '0')}`;
    const seen = new Promise((resolve) => { waiting = { id, resolve }; });
    const t = now();
    await a.put({ _id: id, kind: 'contact', first_name: `Latency${i}`, email: `latency${i}@example.org` });
    const at = await Promise.race([seen, sleep(30000).then(() => null)]);
    if (at === null) throw new Error(`change ${id} did not reach B's _changes feed within 30 s`);
    if (i >= warmup) latency.push(at - t);
  }
  feed.destroy();

  console.log(JSON.stringify({
    record_len: RECORD_LEN,
    write_secs: (written - start) / 1e3,
    secs: (done - start) / 1e3,
    latency_ms: latency,
  }));
  process.exit(0);
})().catch((e) => {
  console.error(`load.js: ${e && e.message}`);
  process.exit(1);
});
