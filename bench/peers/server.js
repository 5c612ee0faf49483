// One PouchDB server for orgsync-bench: express-pouchdb over PouchDB's
// LevelDB adapter, every database under DIR, on a free loopback port.
//
//   node server.js DIR
//
// The port is written to DIR/port (through a rename, so a reader never sees
// half of it) once the server accepts connections; the bench waits for it.
'use strict';
const fs = require('fs');
const path = require('path');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node server.js DIR');
  process.exit(2);
}
const express = require('express');
const PouchDB = require('pouchdb').defaults({ prefix: path.join(dir, 'db-') });

const app = express();
app.use('/', require('express-pouchdb')(PouchDB, {
  mode: 'minimumForPouchDB',
  inMemoryConfig: true,
  logPath: path.join(dir, 'log.txt'),
}));
const server = app.listen(0, '127.0.0.1', () => {
  const tmp = path.join(dir, 'port.tmp');
  fs.writeFileSync(tmp, String(server.address().port));
  fs.renameSync(tmp, path.join(dir, 'port'));
});
server.on('error', (e) => {
  console.error(`server in ${dir}: ${e.message}`);
  process.exit(1);
});
