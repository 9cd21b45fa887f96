#!/usr/bin/env node
// A Node.js client of the TKE platform: signs in with the built-in accounts (AuthService.Login),
// watches clusters, creates one, shows the google.rpc details of a failed call, deletes the
// cluster and waits until the watch reports it gone.
//
//   npm ci --no-audit --no-fund
//   TKE_PASSWORD=... node client.js --server 127.0.0.1:50051 --username admin --cluster demo
//
// Options: --server HOST:PORT (default 127.0.0.1:50051), --username (admin), --cluster (demo),
// --tenant (the caller's), --ca-file PEM (TLS; plaintext without it), --proto-dir (../../proto),
// --timeout SECONDS (30). The password comes from $TKE_PASSWORD.
//
// Everything is loaded at run time from the .proto files with @grpc/proto-loader: the
// platform's contracts from the repository's proto/, google.rpc.Status and its details from
// proto/google/rpc here (copied from googleapis).
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

function parseArgs(argv) {
  const options = {
    server: '127.0.0.1:50051',
    username: 'admin',
    cluster: 'demo',
    tenant: '',
    caFile: '',
    protoDir: path.join(__dirname, '..', '..', 'proto'),
    timeout: 30,
  };
  const names = {
    '--server': 'server', '--username': 'username', '--cluster': 'cluster', '--tenant': 'tenant',
    '--ca-file': 'caFile', '--proto-dir': 'protoDir', '--timeout': 'timeout',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key || argv[i + 1] === undefined) {
      throw new Error(`unknown or incomplete option ${argv[i]} (see the header of client.js)`);
    }
    options[key] = key === 'timeout' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return options;
}

// The platform's services, with zero values filled in (defaults: true), enums by name,
// int64 as strings.
function loadServices(protoDir) {
  const files = ['tke/auth/v1/accounts.proto', 'tke/platform/v1/cluster.proto'];
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protoDir],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition);
  return { AuthService: loaded.tke.auth.v1.AuthService, ClusterService: loaded.tke.platform.v1.ClusterService };
}

// google.rpc.Status and its details, to decode the grpc-status-details-bin trailer.
const richStatus = protobuf.loadSync([
  path.join(__dirname, 'proto', 'google', 'rpc', 'status.proto'),
  path.join(__dirname, 'proto', 'google', 'rpc', 'error_details.proto'),
]);

// "CODE: message" and one line per detail: BadRequest field violations, ResourceInfo,
// PreconditionFailure, ErrorInfo, ...
function describeError(err) {
  const lines = [`error: ${grpc.status[err.code]}: ${err.details}`];
  const raw = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (raw.length === 0) {
    return lines;
  }
  const Status = richStatus.lookupType('google.rpc.Status');
  const status = Status.decode(raw[0]);
  for (const any of status.details) {
    const typeUrl = any.type_url || any.typeUrl;  // protobufjs keeps Any's field name
    const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
    let type;
    try {
      type = richStatus.lookupType(typeName);
    } catch {
      lines.push(`error detail: ${typeName} (not decoded)`);
      continue;
    }
    const detail = type.toObject(type.decode(any.value), { enums: String, longs: String });
    if (typeName === 'google.rpc.BadRequest') {
      for (const v of detail.fieldViolations || []) {
        lines.push(`error detail: ${typeName} field=${v.field} description=${v.description}`);
      }
    } else {
      lines.push(`error detail: ${typeName} ${JSON.stringify(detail)}`);
    }
  }
  return lines;
}

function unary(client, method, request, metadata, timeoutSeconds) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + timeoutSeconds * 1000);
    client[method](request, metadata, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function newCluster(name, tenant) {
  return {
    metadata: { name, tenantId: tenant, labels: { app: 'node-example' } },
    spec: {
      type: 'baremetal',
      version: '1.30.2',
      network: { podCidr: '10.244.0.0/16', serviceCidr: '10.96.0.0/12', mode: 'NETWORK_MODE_BRIDGE' },
    },
  };
}

// Resolves when `predicate(event)` holds for a watch event; rejects when the stream fails.
function watchUntil(stream, predicate) {
  return new Promise((resolve, reject) => {
    stream.on('data', (event) => {
      if (predicate(event)) {
        resolve(event);
      }
    });
    stream.on('error', (err) => {
      if (err.code !== grpc.status.CANCELLED) {
        reject(err);
      }
    });
  });
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const password = process.env.TKE_PASSWORD;
  if (!password) {
    throw new Error('set TKE_PASSWORD to the password of --username');
  }
  const { AuthService, ClusterService } = loadServices(options.protoDir);
  const credentials = options.caFile
    ? grpc.credentials.createSsl(fs.readFileSync(options.caFile))
    : grpc.credentials.createInsecure();
  const auth = new AuthService(options.server, credentials);
  const clusters = new ClusterService(options.server, credentials);

  // 1. Sign in: the token goes into every later call's metadata.
  const login = await unary(auth, 'Login', { username: options.username, password }, new grpc.Metadata(),
    options.timeout);
  const expires = new Date(Number(login.expiresAt.seconds) * 1000).toISOString();
  console.log(`login: ok user=${options.username} expires=${expires}`);
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${login.token}`);

  // 2. Watch clusters: existing ones arrive as ADDED, then a BOOKMARK, then changes.
  const stream = clusters.Watch({ tenantId: options.tenant }, metadata);
  const seen = [];
  stream.on('data', (event) => {
    const type = event.type.replace('WATCH_EVENT_TYPE_', '');
    if (type === 'BOOKMARK') {
      return;
    }
    seen.push(`${type} ${event.object.metadata.name}`);
    console.log(`watch: ${type} ${event.object.metadata.name} resourceVersion=${event.object.metadata.resourceVersion}`
      + ` phase=${event.object.status ? event.object.status.phase : 'unset'}`);  // unset messages are null
  });
  const isBookmark = (e) => e.type === 'WATCH_EVENT_TYPE_BOOKMARK';
  await watchUntil(stream, isBookmark);

  // 3. Create a cluster and see it arrive on the watch.
  const named = (type) => (e) => e.type === `WATCH_EVENT_TYPE_${type}` && e.object.metadata.name === options.cluster;
  const added = watchUntil(stream, named('ADDED'));
  const created = await unary(clusters, 'Create', { cluster: newCluster(options.cluster, options.tenant) }, metadata,
    options.timeout);
  console.log(`create: cluster ${created.metadata.name} uid=${created.metadata.uid}`
    + ` resourceVersion=${created.metadata.resourceVersion} generation=${created.metadata.generation}`);
  await added;

  // 4. An invalid cluster: INVALID_ARGUMENT, with a google.rpc.BadRequest naming each field.
  const invalid = newCluster('Not_A_Valid_Name', options.tenant);
  invalid.spec.network.serviceCidr = '10.244.0.0/12';
  try {
    await unary(clusters, 'Create', { cluster: invalid }, metadata, options.timeout);
    console.log('error: the invalid cluster was accepted');
  } catch (err) {
    for (const line of describeError(err)) {
      console.log(line);
    }
  }

  // 5. A cluster that does not exist: NOT_FOUND with a google.rpc.ResourceInfo.
  try {
    await unary(clusters, 'Get', { name: 'no-such-cluster' }, metadata, options.timeout);
  } catch (err) {
    for (const line of describeError(err)) {
      console.log(line);
    }
  }

  // 6. Delete it and wait for the DELETED event.
  const deleted = watchUntil(stream, named('DELETED'));
  await unary(clusters, 'Delete', { name: options.cluster, tenantId: options.tenant }, metadata, options.timeout);
  console.log(`delete: cluster ${options.cluster}`);
  await deleted;
  stream.cancel();
  auth.close();
  clusters.close();
  console.log(`done: ${seen.join(', ')}`);
}

const timer = setTimeout(() => {
  console.error('client.js: timed out');
  process.exit(1);
}, 120 * 1000);
timer.unref();

main().catch((err) => {
  const lines = err.code !== undefined ? describeError(err) : [`error: ${err.message}`];
  for (const line of lines) {
    console.error(line);
  }
  process.exit(1);
});
