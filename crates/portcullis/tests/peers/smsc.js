#!/usr/bin/env node
// A scriptable SMSC for the SMPP provider's integration tests, built on a peer we did not
// write: the npm `smpp` package (node-smpp 0.5.1, `smpp.createServer`). The gateway's ESME
// client is tested against it as a real process on loopback; the Rust side
// (tests/it/smpp_peer.rs) starts it, reads the `listening` line and drives it over a small
// JSON control API on a second port.
//
// Usage: node smsc.js [--port 0] [--system-id portcullis] [--password secret]
//                     [--id-format hex|decimal]
// Prints exactly one line on stdout: `listening <smpp_port> <control_port>`. Exits when
// stdin closes, so a test process that dies never leaves it behind.
//
// Default behaviour: binds (transceiver/transmitter/receiver) with the configured
// credentials are accepted, others get ESME_RINVPASWD; submit_sm gets ESME_ROK and a fresh
// message id (ESME_RINVBNDSTS if the session is not bound to send); enquire_link and unbind
// are answered (then the session is closed after an unbind). Everything is recorded.
//
// Control API (127.0.0.1:<control_port>, JSON bodies and answers):
//   GET  /state                      -> {binds, submits, deliver_resps, delivers, sessions,
//                                        enquire_links, unbinds, sessions_open, receipt_before_response}
//   POST /script  {status, count}    -> the next `count` submit_sm get `status` and no id
//   POST /hold    {count}            -> the next `count` submit_sm get no answer at all
//   POST /release                    -> answer the held submit_sm (ESME_ROK + id) whose
//                                       session is still open
//   POST /drop                       -> destroy every open TCP session (no unbind)
//   POST /receipt {message_id, stat, err?, tlvs?, id_format?, session?}
//                                    -> one delivery receipt deliver_sm
//   POST /receipt_mode {before_response}
//                                    -> send each accepted submit_sm's DELIVRD receipt
//                                       before its submit_sm_resp
//   POST /mo {from, to, text, parts?, shuffle?, data_coding?, session?}
//                                    -> mobile-originated deliver_sm(s)
// A submits[] entry: session, sequence_number, source_addr(_ton/_npi), destination_addr,
// dest_addr_ton/_npi, esm_class, data_coding, registered_delivery, short_message (hex, exact
// bytes), message_payload (hex or null), sar_msg_ref_num/sar_total_segments/
// sar_segment_seqnum (only if sent), message_id, command_status (null while held), held,
// lost (held, and its session was gone at /release), time.
// /script and /hold append to ONE first-in-first-out plan, so `hold 2` then `script 0x58 1`
// means: hold the next two, throttle the third, then back to ESME_ROK.
'use strict';
const smpp = require('smpp');
const http = require('http');

const args = process.argv.slice(2);
function opt(name, def) {
  const i = args.indexOf('--' + name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}
const PORT = parseInt(opt('port', '0'), 10);
const SYSTEM_ID = opt('system-id', 'portcullis');
const PASSWORD = opt('password', 'secret');
const ID_FORMAT = opt('id-format', 'hex');
if (ID_FORMAT !== 'hex' && ID_FORMAT !== 'decimal') {
  console.error('--id-format must be hex or decimal');
  process.exit(2);
}

// node-smpp decodes short_message/message_payload into text (GSM/Latin-1/UCS-2 guesses),
// which is lossy; the tests need the exact bytes the gateway put on the wire. Keep the raw
// PDU (non-enumerable, so node-smpp's own encode/decode loops never see it).
const origFromBuffer = smpp.PDU.prototype.fromBuffer;
smpp.PDU.prototype.fromBuffer = function (buffer) {
  Object.defineProperty(this, 'raw', { value: Buffer.from(buffer), enumerable: false });
  return origFromBuffer.call(this, buffer);
};

// The exact short_message and every TLV (tag -> bytes) of a submit_sm, from the raw PDU,
// walking the mandatory parameters with node-smpp's own type readers.
function rawFields(pdu) {
  const raw = pdu.raw;
  let off = 16;
  let shortMessage = Buffer.alloc(0);
  const params = smpp.commands.submit_sm.params;
  for (const key in params) {
    const v = params[key].type.read(raw, off);
    off += params[key].type.size(v);
    if (key === 'short_message') shortMessage = v;
  }
  const tlvs = {};
  while (off + 4 <= raw.length) {
    const tag = raw.readUInt16BE(off);
    const len = raw.readUInt16BE(off + 2);
    tlvs[tag] = raw.slice(off + 4, off + 4 + len);
    off += 4 + len;
  }
  return { shortMessage, tlvs };
}

const ESME_ROK = 0x00;
const ESME_RINVBNDSTS = 0x04;
const ESME_RALYBND = 0x05;
const ESME_RINVPASWD = 0x0e;
const TAG = { message_payload: 0x0424, sar_msg_ref_num: 0x020c, sar_total_segments: 0x020e, sar_segment_seqnum: 0x020f };
// SMPP 3.4 §5.2.28 message_state values, keyed by the receipt's `stat:` word.
const MESSAGE_STATE = { ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8 };

const state = {
  binds: [], submits: [], deliver_resps: [], delivers: [], enquire_links: 0, unbinds: 0,
};
const sessions = []; // {id, session, kind, system_id, open}
let plan = []; // FIFO of {status} | {hold: true}, filled by /script and /hold
let held = []; // {rec, pdu, sess}
let receiptBeforeResponse = false;
let nextId = 0xa1b20000; // looks different in hex and decimal, so base mix-ups show
let nextRef = 0;

const now = () => new Date().toISOString();
const formatId = (n, fmt) => (fmt === 'hex' ? n.toString(16) : n.toString(10));
const hex = (b) => (b ? Buffer.from(b).toString('hex') : null);
const canReceive = (s) => s.open && (s.kind === 'bind_transceiver' || s.kind === 'bind_receiver');
const canSend = (s) => s.open && (s.kind === 'bind_transceiver' || s.kind === 'bind_transmitter');

function pad2(n) { return (n < 10 ? '0' : '') + n; }
function smppDate(d) {
  return pad2(d.getUTCFullYear() % 100) + pad2(d.getUTCMonth() + 1) + pad2(d.getUTCDate()) +
    pad2(d.getUTCHours()) + pad2(d.getUTCMinutes());
}

// "+15551234567" is international (ton 1, npi 1, sent without '+'), bare digits are
// unknown-ton ISDN, anything else an alphanumeric sender (ton 5).
function address(a) {
  a = String(a || '');
  if (/^\+\d+$/.test(a)) return { addr: a.slice(1), ton: 1, npi: 1 };
  if (/^\d+$/.test(a)) return { addr: a, ton: 0, npi: 1 };
  return { addr: a, ton: 5, npi: 0 };
}

// A session that can receive deliver_sm: the one asked for, else the first open one.
function receiver(id) {
  if (id !== undefined) return sessions.find((s) => s.id === id && canReceive(s));
  return sessions.find(canReceive);
}

function sendDeliver(sess, kind, fields) {
  const pdu = new smpp.PDU('deliver_sm', fields);
  sess.session.send(pdu); // assigns the sequence number
  state.delivers.push({
    session: sess.id, sequence_number: pdu.sequence_number, kind,
    esm_class: fields.esm_class, data_coding: fields.data_coding,
    short_message: hex(fields.short_message), time: now(),
  });
  return pdu.sequence_number;
}

// A delivery receipt in the de-facto standard text form (SMPP 3.4 Appendix B), optionally
// with the receipted_message_id/message_state TLVs. `idFormat` re-renders the id in another
// base than submit_sm_resp used: some carriers answer in hex and receipt in decimal.
function sendReceipt(sess, { message_id, stat, err, tlvs, id_format, message_state }) {
  let id = String(message_id);
  if (id_format && id_format !== ID_FORMAT) {
    const n = parseInt(id, ID_FORMAT === 'hex' ? 16 : 10);
    if (!Number.isNaN(n)) id = formatId(n, id_format);
  }
  stat = stat || 'DELIVRD';
  const d = smppDate(new Date());
  const text = `id:${id} sub:001 dlvrd:${stat === 'DELIVRD' ? '001' : '000'} submit date:${d} done date:${d} stat:${stat} err:${err || '000'} text:`;
  // Address the receipt back to the submit's sender, as SMSCs do.
  const sub = state.submits.find((s) => s.message_id === String(message_id));
  const fields = {
    source_addr_ton: sub ? sub.dest_addr_ton : 1, source_addr_npi: sub ? sub.dest_addr_npi : 1,
    source_addr: sub ? sub.destination_addr : '',
    dest_addr_ton: sub ? sub.source_addr_ton : 0, dest_addr_npi: sub ? sub.source_addr_npi : 0,
    destination_addr: sub ? sub.source_addr : '',
    esm_class: 0x04, // SMSC delivery receipt
    data_coding: 0,
    short_message: Buffer.from(text, 'ascii'),
  };
  if (tlvs) {
    fields.receipted_message_id = id;
    fields.message_state = message_state !== undefined ? message_state : (MESSAGE_STATE[stat] || 7);
  }
  return sendDeliver(sess, 'receipt', fields);
}

function encodeText(text, dataCoding) {
  if (dataCoding === 8) return Buffer.from(text, 'utf16le').swap16(); // UCS-2 big-endian
  if (dataCoding === 3) return Buffer.from(text, 'latin1');
  return smpp.encodings.ASCII.encode(text); // GSM 03.38, one septet per byte (unpacked)
}

// Mobile-originated message(s). With `parts`, the text is cut into that many concatenated
// parts, each carrying the 8-bit-reference UDH 05 00 03 <ref> <total> <seq>.
function sendMo(sess, body) {
  const from = address(body.from);
  const to = address(body.to);
  const dc = body.data_coding || 0;
  const base = {
    source_addr_ton: from.ton, source_addr_npi: from.npi, source_addr: from.addr,
    dest_addr_ton: to.ton, dest_addr_npi: to.npi, destination_addr: to.addr,
    data_coding: dc,
  };
  const parts = body.parts || 0;
  if (parts <= 1) {
    return { sequence_numbers: [sendDeliver(sess, 'mo', { ...base, esm_class: 0, short_message: encodeText(String(body.text), dc) })] };
  }
  const chars = Array.from(String(body.text)); // code points: never split a surrogate pair
  const size = Math.ceil(chars.length / parts);
  const ref = nextRef++ % 256;
  const pieces = [];
  for (let i = 0; i < parts; i++) {
    const udh = Buffer.from([0x05, 0x00, 0x03, ref, parts, i + 1]);
    const msg = encodeText(chars.slice(i * size, (i + 1) * size).join(''), dc);
    pieces.push({ seq: i + 1, short_message: Buffer.concat([udh, msg]) });
  }
  if (body.shuffle) {
    for (let i = pieces.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [pieces[i], pieces[j]] = [pieces[j], pieces[i]];
    }
  }
  const sequence_numbers = pieces.map((p) =>
    sendDeliver(sess, 'mo', { ...base, esm_class: 0x40, short_message: p.short_message }));
  return { sequence_numbers, order: pieces.map((p) => p.seq), ref };
}

// Accept a submit_sm: fresh id, optional receipt first (receipt_mode), then the response.
function accept(sess, pdu, rec) {
  const id = formatId(nextId++, ID_FORMAT);
  rec.message_id = id;
  rec.command_status = ESME_ROK;
  if (receiptBeforeResponse) {
    const r = receiver(canReceive(sess) ? sess.id : undefined);
    if (r) sendReceipt(r, { message_id: id, stat: 'DELIVRD', tlvs: true });
  }
  sess.session.send(pdu.response({ message_id: id }));
}

const server = smpp.createServer(function (session) {
  const sess = { id: sessions.length + 1, session, kind: null, system_id: null, open: true };
  sessions.push(sess);
  session.socket.setNoDelay(true);

  function onBind(kind) {
    return function (pdu) {
      const good = pdu.system_id === SYSTEM_ID && pdu.password === PASSWORD;
      const status = sess.kind ? ESME_RALYBND : good ? ESME_ROK : ESME_RINVPASWD;
      state.binds.push({ session: sess.id, kind, system_id: pdu.system_id, accepted: status === ESME_ROK, command_status: status, time: now() });
      if (status === ESME_ROK) {
        sess.kind = kind;
        sess.system_id = pdu.system_id;
        session.send(pdu.response({ system_id: 'SMSC' }));
      } else {
        session.send(pdu.response({ command_status: status }));
      }
    };
  }
  session.on('bind_transceiver', onBind('bind_transceiver'));
  session.on('bind_transmitter', onBind('bind_transmitter'));
  session.on('bind_receiver', onBind('bind_receiver'));

  session.on('submit_sm', function (pdu) {
    const { shortMessage, tlvs } = rawFields(pdu);
    const rec = {
      session: sess.id, sequence_number: pdu.sequence_number,
      source_addr: pdu.source_addr, source_addr_ton: pdu.source_addr_ton, source_addr_npi: pdu.source_addr_npi,
      destination_addr: pdu.destination_addr, dest_addr_ton: pdu.dest_addr_ton, dest_addr_npi: pdu.dest_addr_npi,
      esm_class: pdu.esm_class, data_coding: pdu.data_coding, registered_delivery: pdu.registered_delivery,
      short_message: hex(shortMessage),
      message_payload: tlvs[TAG.message_payload] ? hex(tlvs[TAG.message_payload]) : null,
      message_id: null, command_status: null, held: false, lost: false, time: now(),
    };
    for (const k of ['sar_msg_ref_num', 'sar_total_segments', 'sar_segment_seqnum']) {
      if (tlvs[TAG[k]]) rec[k] = tlvs[TAG[k]].readUIntBE(0, tlvs[TAG[k]].length);
    }
    state.submits.push(rec);
    if (!canSend(sess)) {
      rec.command_status = ESME_RINVBNDSTS;
      session.send(pdu.response({ command_status: ESME_RINVBNDSTS }));
      return;
    }
    const step = plan.shift();
    if (step && step.hold) {
      rec.held = true;
      held.push({ rec, pdu, sess });
    } else if (step) {
      rec.command_status = step.status;
      session.send(pdu.response({ command_status: step.status }));
    } else {
      accept(sess, pdu, rec);
    }
  });
  session.on('deliver_sm_resp', function (pdu) {
    state.deliver_resps.push({ session: sess.id, sequence_number: pdu.sequence_number, command_status: pdu.command_status, time: now() });
  });
  session.on('enquire_link', function (pdu) {
    state.enquire_links++;
    session.send(pdu.response());
  });
  session.on('unbind', function (pdu) {
    state.unbinds++;
    session.send(pdu.response());
    session.close(); // end() after the queued unbind_resp is flushed
  });
  session.on('pdu', function (pdu) {
    if (pdu.command === 'unknown') session.send(pdu.response()); // generic_nack
  });
  session.on('error', function () { /* the client went away: 'close' follows */ });
  session.on('close', function () { sess.open = false; });
});

function control(req, body) {
  const route = req.method + ' ' + req.url;
  switch (route) {
    case 'GET /state':
      return [200, {
        ...state,
        sessions: sessions.map((s) => ({ id: s.id, kind: s.kind, system_id: s.system_id, open: s.open })),
        sessions_open: sessions.filter((s) => s.open).length,
        receipt_before_response: receiptBeforeResponse,
        plan_pending: plan.length, held_pending: held.length,
      }];
    case 'POST /script':
      for (let i = 0; i < (body.count || 1); i++) plan.push({ status: body.status });
      return [200, { plan_pending: plan.length }];
    case 'POST /hold':
      for (let i = 0; i < (body.count || 1); i++) plan.push({ hold: true });
      return [200, { plan_pending: plan.length }];
    case 'POST /release': {
      const released = [];
      for (const h of held) {
        h.rec.held = false;
        if (h.sess.open && h.sess.session.socket.writable) {
          accept(h.sess, h.pdu, h.rec);
          released.push(h.rec.message_id);
        } else {
          h.rec.lost = true; // its session is gone: nobody to answer any more
        }
      }
      held = [];
      return [200, { released }];
    }
    case 'POST /drop': {
      const open = sessions.filter((s) => s.open);
      for (const s of open) s.session.destroy(); // RST-like: no unbind, no flush
      return [200, { dropped: open.length }];
    }
    case 'POST /receipt': {
      const r = receiver(body.session);
      if (!r) return [409, { error: 'no session bound to receive' }];
      return [200, { sequence_number: sendReceipt(r, body) }];
    }
    case 'POST /receipt_mode':
      receiptBeforeResponse = !!body.before_response;
      return [200, { before_response: receiptBeforeResponse }];
    case 'POST /mo': {
      const r = receiver(body.session);
      if (!r) return [409, { error: 'no session bound to receive' }];
      return [200, sendMo(r, body)];
    }
    default:
      return [404, { error: 'no route ' + route }];
  }
}

const controlServer = http.createServer(function (req, res) {
  let data = '';
  req.on('data', (c) => { data += c; });
  req.on('end', function () {
    let code, answer;
    try {
      [code, answer] = control(req, data ? JSON.parse(data) : {});
    } catch (e) {
      [code, answer] = [400, { error: String(e && e.stack || e) }];
    }
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(answer));
  });
});

server.listen(PORT, '127.0.0.1', function () {
  controlServer.listen(0, '127.0.0.1', function () {
    console.log(`listening ${server.address().port} ${controlServer.address().port}`);
  });
});

// The harness keeps our stdin open; when it goes (test process exited or killed), so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
