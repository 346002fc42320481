// gRPC's proxyless xDS client for Node (@grpc/grpc-js-xds), the second judge. Same protocol
// as grpc_client.py: resolves xds:///TARGET via $GRPC_XDS_BOOTSTRAP and answers commands on
// stdin ("count N [k=v ...]", "until NAME N SECONDS [k=v ...]", "concurrent N") with one JSON
// line each; k=v words are metadata for each call, except deadline=S (seconds, 2 by default),
// and count also reports milliseconds per call ("ms" overall, "ms_by" per outcome).
// --fail-fast: the first call does not wait for the channel to be ready.
// --xds-creds: XdsChannelCredentials (gRFC A29; plaintext fallback). --sni NAME: the TLS
// server name (grpc.ssl_target_name_override); grpc-js-xds ignores UpstreamTlsContext.sni.
'use strict';
const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();
const readline = require('readline');

const { XdsChannelCredentials } = require('@grpc/grpc-js-xds');

const args = process.argv.slice(3);
const flag = (name) => { const i = args.indexOf(name); return i < 0 ? undefined : args[i + 1]; };
const creds = args.includes('--xds-creds')
  ? new XdsChannelCredentials(grpc.credentials.createInsecure())
  : grpc.credentials.createInsecure();
const options = flag('--sni') ? { 'grpc.ssl_target_name_override': flag('--sni') } : {};
const client = new grpc.Client(process.argv[2], creds, options);
const id = (x) => x;

function call(timeoutS, waitForReady, pairs = []) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + timeoutS * 1000);
    const metadata = new grpc.Metadata({ waitForReady });
    for (const [k, v] of pairs) metadata.add(k, v);
    client.makeUnaryRequest('/helloworld.Greeter/SayHello', id, id, Buffer.from('hi'),
      metadata, { deadline },
      (err, resp) => resolve(err ? 'error:' + grpc.status[err.code] : resp.toString()));
  });
}

function bump(counts, k) { counts[k] = (counts[k] || 0) + 1; }

// The metadata pairs and deadline (seconds) of k=v words; keys are lower case on the wire.
function callOptions(words) {
  const pairs = [];
  let deadline = 2;
  for (const word of words) {
    const i = word.indexOf('=');
    const [k, v] = [word.slice(0, i).toLowerCase(), word.slice(i + 1)];
    if (k === 'deadline') deadline = Number(v); else pairs.push([k, v]);
  }
  return { pairs, deadline };
}

function spread(ms) {
  if (ms.length === 0) return {};
  const s = [...ms].sort((a, b) => a - b);
  return { min: s[0], p50: s[Math.floor(s.length / 2)], max: s[s.length - 1] };
}

// n calls in a row: each outcome's count, and how long the calls took (milliseconds).
async function count(n, words) {
  const { pairs, deadline } = callOptions(words);
  const counts = {}, took = {};
  let errors = 0;
  for (let i = 0; i < n; i++) {
    const start = process.hrtime.bigint();
    const got = await call(deadline, false, pairs);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    bump(counts, got);
    (took[got] = took[got] || []).push(ms);
    if (got.startsWith('error:')) errors++;
  }
  const msBy = {};
  for (const [k, v] of Object.entries(took)) msBy[k] = spread(v);
  return { counts, errors, ms: spread(Object.values(took).flat()), ms_by: msBy };
}

// N calls started together (10 s deadline): each outcome's count and its slowest call.
// grpc-js counts a call against the cluster's limit only once it has started on a
// subchannel, which is a tick after its pick, so the calls are started 50 ms apart.
async function concurrent(n) {
  const timed = async (i) => {
    await new Promise((r) => setTimeout(r, 50 * i));
    const start = Date.now();
    const got = await call(10, false);
    return [got, (Date.now() - start) / 1000];
  };
  const results = await Promise.all(Array.from({ length: n }, (_, i) => timed(i)));
  const counts = {}, seconds = {};
  for (const [got, took] of results) {
    bump(counts, got);
    seconds[got] = Math.max(seconds[got] || 0, took);
  }
  return { counts, seconds };
}

async function main() {
  const first = await call(30, !args.includes('--fail-fast'));
  console.log(JSON.stringify({ ready: first }));
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const w = line.trim().split(/\s+/);
    if (w[0] === 'count') {
      console.log(JSON.stringify(await count(Number(w[1]), w.slice(2))));
    } else if (w[0] === 'until') {
      const [name, run, limit] = [w[1], Number(w[2]), Number(w[3])];
      const { pairs, deadline } = callOptions(w.slice(4));
      const start = Date.now();
      const counts = {};
      let calls = 0, streak = 0;
      while (streak < run && (Date.now() - start) / 1000 < limit) {
        const got = await call(deadline, false, pairs);
        calls++;
        bump(counts, got);
        streak = got === name ? streak + 1 : 0;
      }
      console.log(JSON.stringify({ ok: streak >= run, calls, seconds: (Date.now() - start) / 1000, counts }));
    } else if (w[0] === 'concurrent') {
      console.log(JSON.stringify(await concurrent(Number(w[1]))));
    }
  }
  client.close();
  process.exit(0);
}

main();
