// node-postgres (pg) check against a PostgreSQL-protocol server (unidb).
// Connection from UNIDB_HOST, UNIDB_PORT, UNIDB_USER, UNIDB_PASSWORD, UNIDB_DB.
// Prints one line per check and "node-postgres: all checks passed"; exits non-zero
// on the first failure.
'use strict';

const { Client } = require('pg');

const TABLE = `unidb_clients_node_${process.pid}`;

function check(name, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) {
    console.log(`FAIL - ${name}: expected ${w}, got ${g}`);
    process.exit(1);
  }
  console.log(`ok - ${name}`);
}

async function expectError(name, code, fn) {
  try {
    await fn();
  } catch (e) {
    check(`${name}: SQLSTATE`, e.code, code);
    return;
  }
  console.log(`FAIL - ${name}: expected SQLSTATE ${code}, nothing was raised`);
  process.exit(1);
}

async function run(c) {
  const v = await c.query('SELECT 1 AS one');
  check('SELECT 1', v.rows[0].one, 1);

  await c.query(`CREATE TABLE ${TABLE} (
      id serial PRIMARY KEY, label varchar(40) NOT NULL UNIQUE, n int8, score numeric(6,3),
      ok boolean, at timestamptz, doc jsonb, blob bytea, uid uuid)`);

  // Parameters go through the extended protocol; a named statement is prepared once.
  const insert = {
    name: 'insert_item',
    text: `INSERT INTO ${TABLE} (label, n, score, ok, at, doc, blob, uid)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
  };
  const at = new Date(Date.UTC(2026, 0, 15, 10, 30, 0));
  const ids = [];
  for (let i = 1; i <= 3; i++) {
    const r = await c.query({
      ...insert,
      values: [`item ${i}`, 9007199254740993n.toString(), (i * 1.25).toFixed(3), i % 2 === 1,
        at, { i, tags: ['a', 'b'] }, Buffer.from([0, i, 255]),
        `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1${i}`],
    });
    ids.push(r.rows[0].id);
  }
  check('serial ids from RETURNING', ids, [1, 2, 3]);

  const r = await c.query({
    name: 'select_item',
    text: `SELECT id, label, n, score, ok, at, doc, blob, uid FROM ${TABLE} WHERE id = $1`,
    values: [2],
  });
  const row = r.rows[0];
  check('int8 comes back as a string', row.n, '9007199254740993');
  check('numeric keeps its scale', row.score, '2.500');
  check('boolean', row.ok, false);
  check('timestamptz as a Date', row.at.toISOString(), at.toISOString());
  check('jsonb parsed', row.doc, { i: 2, tags: ['a', 'b'] });
  check('bytea as a Buffer', [...row.blob], [0, 2, 255]);
  check('uuid', row.uid, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12');
  check('result field types', r.fields.map((f) => f.dataTypeID),
    [23, 1043, 20, 1700, 16, 1184, 3802, 17, 2950]);

  // Transactions: a rolled-back insert is gone, an error fails the transaction.
  await c.query('BEGIN');
  await c.query({ ...insert, values: ['rolled back', '1', '0', true, at, {}, Buffer.alloc(0), null] });
  await c.query('ROLLBACK');
  const count = await c.query(`SELECT count(*)::int AS n FROM ${TABLE}`);
  check('rollback undoes the insert', count.rows[0].n, 3);

  await c.query('BEGIN');
  await expectError('duplicate label', '23505', () =>
    c.query({ ...insert, values: ['item 1', '1', '0', true, at, {}, Buffer.alloc(0), null] }));
  await expectError('statement in the failed transaction', '25P02', () => c.query('SELECT 1'));
  await c.query('ROLLBACK');

  const agg = await c.query(
    `SELECT count(*) AS n, sum(score) AS total, bool_or(ok) AS any_ok FROM ${TABLE} WHERE id = ANY($1)`,
    [[1, 3]]);
  check('aggregate over = ANY($1) with an array parameter',
    [agg.rows[0].n, agg.rows[0].total, agg.rows[0].any_ok], ['2', '5.000', true]);

  await expectError('division by zero', '22012', () => c.query('SELECT 1 / $1::int AS x', [0]));
  const after = await c.query({ name: 'select_item', text: `SELECT id, label, n, score, ok, at, doc, blob, uid FROM ${TABLE} WHERE id = $1`, values: [3] });
  check('named statement still usable after errors', after.rows[0].label, 'item 3');
}

async function main() {
  const c = new Client({
    host: process.env.UNIDB_HOST,
    port: Number(process.env.UNIDB_PORT),
    user: process.env.UNIDB_USER,
    password: process.env.UNIDB_PASSWORD || undefined,
    database: process.env.UNIDB_DB,
    application_name: 'unidb_node',
  });
  await c.connect();
  try {
    await run(c);
  } finally {
    await c.query(`DROP TABLE IF EXISTS ${TABLE}`).catch(() => {});
    await c.end();
  }
  console.log('node-postgres: all checks passed');
}

main().catch((e) => {
  console.log(`FAIL - unexpected error: ${e.code || ''} ${e.message}`);
  process.exit(1);
});
