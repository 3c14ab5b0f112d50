#!/usr/bin/env node
// A Node.js caller of the upload.v1 services, as another team would write one: @grpc/grpc-js and
// @grpc/proto-loader loading the shipped .proto files as they are (include root: protos/).
//
//   node protos/examples/caller.js --validator 127.0.0.1:50051 --thumbnail 127.0.0.1:50052 photo.png
//
// Validates the file (streamed from disk in 64 KiB chunks, stopping once the verdict comes), then,
// if it is an image, renders a thumbnail. Prints one JSON object; exit status 0 when accepted,
// 1 when refused, 2 on an error (with the error's code and its ErrorInfo reason).
// Mutual TLS with the services' own settings, read from the environment as every process of the
// project reads them: GRPC_TLS_CA (turns TLS on), GRPC_TLS_CERT and GRPC_TLS_KEY (this caller's
// certificate), GRPC_TLS_SERVER_NAME (the name expected in the services' certificates).
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..');
const CHUNK = 64 * 1024;
// The recommended deadlines (README, "Calling the services"), milliseconds.
const FILE_DEADLINE = 60_000;
// UNAVAILABLE is the services' "busy, retry shortly": retried by gRPC with backoff.
const SERVICE_CONFIG = {
  methodConfig: [{
    name: [{ service: 'upload.v1.Validator' }, { service: 'upload.v1.Thumbnail' }],
    retryPolicy: {
      maxAttempts: 5, initialBackoff: '0.2s', maxBackoff: '2s', backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
};

function credentials(env) {
  if (!env.GRPC_TLS_CA) {
    if (env.GRPC_TLS_CERT || env.GRPC_TLS_KEY) throw new Error('GRPC_TLS_CERT and GRPC_TLS_KEY need GRPC_TLS_CA: the CA the services\' certificates are checked against');
    return { creds: grpc.credentials.createInsecure(), options: {} };
  }
  if (!env.GRPC_TLS_CERT !== !env.GRPC_TLS_KEY) throw new Error('GRPC_TLS_CERT and GRPC_TLS_KEY go together');
  const read = (name) => (env[name] ? fs.readFileSync(env[name]) : null);
  const options = env.GRPC_TLS_SERVER_NAME ? { 'grpc.ssl_target_name_override': env.GRPC_TLS_SERVER_NAME } : {};
  return { creds: grpc.credentials.createSsl(read('GRPC_TLS_CA'), read('GRPC_TLS_KEY'), read('GRPC_TLS_CERT')), options };
}

function load() {
  const definition = protoLoader.loadSync(['upload/v1/validator.proto', 'upload/v1/thumbnail.proto'], {
    includeDirs: [PROTO_ROOT], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).upload.v1;
}

function parseArgs(argv) {
  const args = { validator: '127.0.0.1:50051', thumbnail: '127.0.0.1:50052', box: 0, file: null };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--validator' || flag === '--thumbnail' || flag === '--box') args[flag.slice(2)] = argv[++i];
    else args.file = flag;
  }
  if (!args.file) throw new Error('usage: caller.js [--validator ADDR] [--thumbnail ADDR] [--box PX] FILE');
  args.box = Number(args.box);
  return args;
}

// The stable reason in the error's google.rpc.Status details (ErrorInfo), read from the
// trailer as bytes: decoded with the protobuf runtime proto-loader brings (protobufjs).
function errorReason(error) {
  const raw = error.metadata && error.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return null;
  const protobuf = require('protobufjs');
  const root = protobuf.Root.fromJSON({
    nested: {
      Status: { fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 }, details: { rule: 'repeated', type: 'Any', id: 3 } } },
      Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
      ErrorInfo: { fields: { reason: { type: 'string', id: 1 }, domain: { type: 'string', id: 2 } } },
    },
  });
  const status = root.lookupType('Status').decode(raw);
  for (const detail of status.details) {
    if (detail.type_url.endsWith('/google.rpc.ErrorInfo')) return root.lookupType('ErrorInfo').decode(detail.value).reason;
  }
  return null;
}

// Streams `file` as `first`, then {chunk} messages, then `last` (if any), stopping as soon as the
// call has ended (the validator answers once its rules have seen enough).
function streamFile(call, file, first, last) {
  call.write(first);
  const input = fs.createReadStream(file, { highWaterMark: CHUNK });
  let ended = false;
  call.on('status', () => { ended = true; input.destroy(); });
  input.on('data', (chunk) => {
    if (ended) return;
    if (!call.write({ chunk })) { input.pause(); call.once('drain', () => input.resume()); }
  });
  input.on('end', () => { if (!ended) { if (last) call.write(last); call.end(); } });
  input.on('error', (error) => call.cancelWithStatus(grpc.status.CANCELLED, `cannot read the file: ${error.message}`));
}

function validate(client, file) {
  const size = fs.statSync(file).size;
  return new Promise((resolve, reject) => {
    const call = client.Validate({ deadline: Date.now() + FILE_DEADLINE }, (error, verdict) => (error ? reject(error) : resolve(verdict)));
    streamFile(call, file, { info: { original_name: path.basename(file), declared_size: size } }, { end: { size } });
  });
}

function render(client, file, mimeType, box) {
  const size = fs.statSync(file).size;
  return new Promise((resolve, reject) => {
    const call = client.Render({ deadline: Date.now() + FILE_DEADLINE }, (error, image) => (error ? reject(error) : resolve(image)));
    const options = { info: { original_name: path.basename(file), declared_size: size }, mime_type: mimeType, max_width: box, max_height: box };
    streamFile(call, file, { options }, null);
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const v1 = load();
  const tls = credentials(process.env);
  const channelOptions = { 'grpc.service_config': JSON.stringify(SERVICE_CONFIG), ...tls.options };
  const validator = new v1.Validator(args.validator, tls.creds, channelOptions);
  const thumbnail = new v1.Thumbnail(args.thumbnail, tls.creds, channelOptions);
  try {
    const verdict = await validate(validator, args.file);
    const out = {
      accepted: verdict.accepted, detected_type: verdict.detected_type, width: verdict.width, height: verdict.height,
      reasons: verdict.reasons.map((r) => ({ code: r.code, message: r.message })),
    };
    if (verdict.accepted && verdict.is_image) {
      const image = await render(thumbnail, args.file, verdict.detected_type, args.box);
      out.thumbnail = { mime_type: image.mime_type, width: image.width, height: image.height, bytes: image.data.length };
    }
    console.log(JSON.stringify(out));
    process.exitCode = verdict.accepted ? 0 : 1;
  } catch (error) {
    console.log(JSON.stringify({ error: grpc.status[error.code], reason: errorReason(error), message: error.details }));
    process.exitCode = 2;
  } finally {
    validator.close();
    thumbnail.close();
  }
}

main().catch((error) => { console.error(error.message); process.exitCode = 2; });
