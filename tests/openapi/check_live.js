'use strict';
/*
 * check_live.js - talks to a running bulkreg the way a client generated from
 * docs/openapi.yaml would, and checks every answer against the document:
 * the status is one the operation lists (or its `default`), the media type
 * is one the response declares, and the body validates against the
 * response's schema. Every operation of the document must be exercised at
 * least once, so a route added to the server without a scenario here (or to
 * the document without a server behind it) fails.
 *
 * Usage: node check_live.js SPEC   with API_URL and BULKREG_TOKEN set (a
 * fresh organization's token, an API and a worker running). Exit status 0
 * when every answer conforms; otherwise each mismatch is printed.
 */
const SwaggerParser = require('@apidevtools/swagger-parser');
const Ajv = require('ajv-draft-04');

const BASE = process.env.API_URL;
const TOKEN = process.env.BULKREG_TOKEN;
const METHODS = ['get', 'head', 'post', 'put', 'patch', 'delete'];

let api;
let ajv;
const validators = new Map();
const problems = [];
const seen = new Map(); /* "METHOD template" -> Set of statuses */
let checked = 0;

/* OpenAPI 3.0 `format`s the document uses, checked as a client would. */
function addFormats(a) {
  a.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
  a.addFormat('date', /^\d{4}-\d\d-\d\d$/);
  a.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
  a.addFormat('uri', /^[a-z][a-z0-9+.-]*:\S+$/i);
  a.addFormat('email', /^[^\s@]+@[^\s@]+$/);
  a.addFormat('int32', { type: 'number', validate: (n) => Number.isInteger(n) });
  a.addFormat('int64', { type: 'number', validate: (n) => Number.isInteger(n) });
  a.addFormat('password', /.*/);
}

/* The document's operation for a concrete path: literal segments win. */
function findOperation(method, path) {
  const segs = path.split('/');
  let best = null;
  let bestScore = -1;
  for (const [template, item] of Object.entries(api.paths)) {
    const t = template.split('/');
    if (t.length !== segs.length) continue;
    let score = 0;
    let ok = true;
    for (let i = 0; i < t.length && ok; i++) {
      if (/^\{.*\}$/.test(t[i])) continue;
      if (t[i] === segs[i]) score++;
      else ok = false;
    }
    if (ok && score > bestScore) {
      best = { template, item };
      bestScore = score;
    }
  }
  if (!best) return null;
  return { template: best.template, item: best.item, op: best.item[method.toLowerCase()] || null };
}

function schemaValidator(key, schema) {
  if (!validators.has(key)) validators.set(key, ajv.compile(schema));
  return validators.get(key);
}

function fail(what, text) {
  problems.push(`${what}\n    body: ${text.slice(0, 400)}`);
}

/*
 * One request, checked. opts: {body (object: JSON; string: sent as is),
 * type (Content-Type), token (false = none, string = another), headers,
 * expect (the status this scenario means to provoke)}.
 */
async function call(method, path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  const token = opts.token === undefined ? TOKEN : opts.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (opts.body !== undefined) {
    body = typeof opts.body === 'string' || opts.body instanceof FormData ? opts.body : JSON.stringify(opts.body);
    if (!(opts.body instanceof FormData)) headers['Content-Type'] = opts.type || 'application/json';
  }
  const res = await fetch(BASE + path, { method, headers, body });
  const text = await res.text();
  const where = `${method} ${path} -> ${res.status}`;
  checked++;
  if (opts.expect !== undefined && res.status !== opts.expect) {
    fail(`${where}: the scenario expected ${opts.expect}`, text);
  }
  const found = findOperation(method === 'HEAD' ? 'head' : method, path.split('?')[0]);
  if (!found) {
    fail(`${where}: no such path in the document`, text);
    return { status: res.status, headers: res.headers, json: parse(text) };
  }
  const key = `${method} ${found.template}`;
  if (!seen.has(key)) seen.set(key, new Set());
  seen.get(key).add(res.status);
  let response;
  if (found.op) {
    response = found.op.responses[String(res.status)] || found.op.responses.default;
  } else {
    /* A method the path does not have: 405 with Allow, in the shape the
     * path's other operations give their 405 (else the /v1 one). */
    if (res.status !== 405 || !res.headers.get('allow')) {
      fail(`${where}: a method the document does not list must get 405 with Allow`, text);
    }
    const other = METHODS.map((m) => found.item[m]).find((op) => op && op.responses['405']);
    response = other ? other.responses['405'] : api.components.responses.MethodNotAllowed;
  }
  if (!response) {
    fail(`${where}: status not listed for ${key} (lists ${Object.keys(found.op.responses)})`, text);
    return { status: res.status, headers: res.headers, json: parse(text) };
  }
  const full = (res.headers.get('content-type') || '').trim();
  const ctype = full.split(';')[0].trim();
  if (method !== 'HEAD' && response.content) {
    const media = response.content[full] || response.content[ctype];
    if (!media) {
      fail(`${where}: Content-Type ${ctype || '(none)'} not declared (${Object.keys(response.content)})`, text);
    } else if (media.schema && /json$/.test(ctype)) {
      const json = parse(text);
      if (json === undefined) {
        fail(`${where}: declared ${ctype} but the body is not JSON`, text);
      } else {
        const v = schemaValidator(`${key} ${res.status} ${ctype}`, media.schema);
        if (!v(json)) fail(`${where}: body does not match the schema: ${ajv.errorsText(v.errors)}`, text);
      }
    }
  } else if (method !== 'HEAD' && !response.content && text.length > 0) {
    fail(`${where}: a body where the document declares none`, text);
  }
  return { status: res.status, headers: res.headers, json: parse(text) };
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitJob(prefix, id) {
  for (let i = 0; i < 300; i++) {
    const r = await call('GET', `${prefix}/${id}`);
    const st = r.json && r.json.data && r.json.data.attributes && r.json.data.attributes.status;
    if (st && st !== 'processing' && st !== 'pending' && st !== 'queued') return r;
    await sleep(100);
  }
  throw new Error(`job ${id} did not end`);
}

function person(email, extra = {}) {
  return { type: 'people', attributes: { email, first_name: 'Ada', last_name: 'Lovelace', ...extra } };
}

async function operations() {
  for (const p of ['/healthz', '/readyz', '/metrics']) {
    await call('GET', p, { expect: 200, token: false });
    await call('HEAD', p, { expect: 200, token: false });
  }

  const tag = Date.now().toString(36);
  const starts = new Date(Date.now() + 86400e3).toISOString();
  const session = (await call('POST', '/v1/sessions', {
    expect: 201,
    body: { data: { type: 'sessions', attributes: { title: `Spec ${tag}`, starts_at: starts, capacity: 3, waitlist: true } } },
  })).json.data.id;
  const s = `/v1/sessions/${session}`;
  await call('POST', '/v1/sessions', { expect: 422, body: { data: { type: 'sessions', attributes: { capacity: -1 } } } });
  await call('POST', '/v1/sessions', { expect: 400, body: '{"data":' });
  await call('POST', '/v1/sessions', { expect: 415, body: 'title=x', type: 'text/plain' });
  await call('POST', '/v1/sessions', { expect: 413, body: `{"x":"${'a'.repeat(1100000)}"}` });
  await call('GET', '/v1/sessions', { expect: 200 });
  await call('GET', '/v1/sessions?page[size]=0', { expect: 400 });
  await call('HEAD', '/v1/sessions', { expect: 200 });
  await call('GET', s, { expect: 200 });
  await call('HEAD', s, { expect: 200 });
  await call('GET', '/v1/sessions/00000000-0000-4000-8000-000000000000', { expect: 404 });
  await call('GET', '/v1/sessions', { expect: 401, token: false });
  await call('PUT', '/v1/sessions', { expect: 405, body: {} });
  await call('PATCH', s, { expect: 200, body: { data: { type: 'sessions', attributes: { title: `Spec ${tag} renamed` } } } });

  const first = (await call('POST', `${s}/people`, { expect: 201, body: { data: person(`ada-${tag}@example.com`) } })).json.data.id;
  await call('POST', `${s}/people`, { expect: 409, body: { data: person(`ADA-${tag}@example.com`) } });
  await call('POST', `${s}/people`, { expect: 422, body: { data: person('not-an-address') } });
  await call('GET', `${s}/people`, { expect: 200 });
  await call('HEAD', `${s}/people`, { expect: 200 });
  await call('GET', `${s}/people/${first}`, { expect: 200 });
  await call('HEAD', `${s}/people/${first}`, { expect: 200 });
  await call('PATCH', `${s}/people/${first}`, { expect: 200, body: { data: { type: 'people', attributes: { registration_status: 'cancelled' } } } });
  await call('PATCH', `${s}/people/${first}`, { expect: 409, body: { data: { type: 'people', attributes: { registration_status: 'registered' } } } });
  await call('DELETE', `${s}/people/${first}`, { expect: 200 });

  /* An endpoint nobody listens on (refused at once): every job.ended
   * delivery fails fast and has an attempt to show and to send again. */
  const hook = (await call('POST', '/v1/webhooks', {
    expect: 201,
    body: { data: { type: 'webhooks', attributes: { url: 'http://127.0.0.1:9/bulkreg', events: ['job.ended'] } } },
  })).json.data.id;
  await call('POST', '/v1/webhooks', { expect: 422, body: { data: { type: 'webhooks', attributes: { url: 'ftp://x', events: ['job.ended'] } } } });

  const tasks = [];
  for (let i = 0; i < 5; i++) tasks.push(person(`bulk-${i}-${tag}@example.com`));
  tasks.push(person(`bulk-0-${tag}@example.com`));
  const bulk = await call('POST', `${s}/people/bulk`, { expect: 202, body: { type: 'jobs', data: { attributes: { tasks } } } });
  const job = bulk.json.data.id;
  await call('POST', `${s}/people/bulk`, { expect: 422, body: { type: 'jobs', data: { attributes: { tasks: [] } } } });
  await waitJob('/v1/jobs', job);
  await call('GET', `/v1/jobs/${job}/tasks`, { expect: 207 });
  await call('HEAD', `/v1/jobs/${job}/tasks`, { expect: 207 });
  await call('GET', '/v1/jobs', { expect: 200 });
  await call('HEAD', '/v1/jobs', { expect: 200 });
  await call('HEAD', `/v1/jobs/${job}`, { expect: 200 });
  await call('PUT', `/v1/jobs/${job}`, { expect: 202, body: { action: 'retry_failed' } });
  await waitJob('/v1/jobs', job);
  await call('PUT', `/v1/jobs/${job}`, { expect: 422, body: { action: 'retry_failed', override_duplicates: 3 } });
  await call('PUT', `/v1/jobs/${job}?x=1`, { expect: 400, body: { action: 'retry_failed' } });
  await call('DELETE', `/v1/jobs/${job}`, { expect: 200 });
  await call('DELETE', `${s}/people?email=bulk-1-${tag}@example.com`, { expect: 200 });

  await call('GET', '/v1/webhooks', { expect: 200 });
  await call('HEAD', '/v1/webhooks', { expect: 200 });
  let delivery;
  for (let i = 0; i < 100 && !delivery; i++) {
    const r = await call('GET', `/v1/webhooks/${hook}/deliveries`, { expect: 200 });
    delivery = r.json && r.json.data[0] && r.json.data[0].attributes.delivery_id;
    if (!delivery) await sleep(100);
  }
  if (!delivery) problems.push('no delivery attempt of job.ended within 10 s');
  await call('HEAD', `/v1/webhooks/${hook}/deliveries`, { expect: 200 });
  if (delivery) await call('POST', `/v1/webhooks/${hook}/deliveries/${delivery}/retry`, { expect: 202 });
  await call('POST', `/v1/webhooks/${hook}/deliveries/00000000-0000-4000-8000-000000000000/retry`, { expect: 404 });
  await call('DELETE', `/v1/webhooks/${hook}`, { expect: 200 });


  await call('DELETE', s, { expect: 200 });
  await compat(tag, starts);
}

async function compat(tag, starts) {
  const date = starts.slice(0, 10);
  const br = await call('POST', '/api/v1/bulk-registrations', {
    expect: 202,
    body: {
      coordinator_id: `coord-${tag}`, mentor_ids: [`m-${tag}-1`, `m-${tag}-2`], activity_type: 'group_workshop',
      activity_date: date, duration_minutes: 60, notes: 'spec check',
    },
  });
  const brId = br.json && br.json.id;
  await call('POST', '/api/v1/bulk-registrations', { expect: 400, body: '[' });
  await call('POST', '/api/v1/bulk-registrations', { expect: 422, body: { coordinator_id: 'c', mentor_ids: [] } });
  await call('GET', '/api/v1/bulk-registrations', { expect: 200 });
  await call('GET', '/api/v1/bulk-registrations', { expect: 401, token: false });
  for (let i = 0; brId && i < 300; i++) {
    const r = await call('GET', `/api/v1/bulk-registrations/${brId}`, { expect: 200 });
    if (r.json && r.json.status !== 'processing') break;
    await sleep(100);
  }
  await call('PUT', `/api/v1/bulk-registrations/${brId}`, { expect: 409, body: { action: 'retry_failed' } });
  await call('DELETE', `/api/v1/bulk-registrations/${brId}`, { expect: 200 });
  await call('GET', '/api/v1/bulk-registrations/00000000-0000-4000-8000-000000000000', { expect: 404 });

  const session = (await call('POST', '/v1/sessions', {
    expect: 201,
    body: { data: { type: 'sessions', attributes: { title: `Compat ${tag}`, starts_at: starts, capacity: 10, tracks: [{ id: 1, name: 'Morning' }, { id: 2, name: 'Afternoon' }] } } },
  })).json.data.id;
  const w = `/api/v1/workshops/${session}/registrations`;
  await call('POST', w, { expect: 201, body: { track_id: 1, guest_id: `g-${tag}`, center_id: 'center-3', waitlist: true } });
  await call('POST', w, { expect: 422, body: { track_id: 9, guest_id: `g2-${tag}` } });
  await call('POST', w, { expect: 409, body: { track_id: 1, guest_id: `g-${tag}` } });
  await call('POST', w, { expect: 400, body: '{' });
  await call('POST', '/api/v1/workshops/00000000-0000-4000-8000-000000000000/registrations', {
    expect: 404, body: { track_id: 1, guest_id: `g3-${tag}` },
  });
  const z = `/v2/webinars/${session}/batch_registrants`;
  await call('POST', z, {
    expect: 201,
    body: { auto_approve: true, registrants: [{ email: `zoom-${tag}@example.com`, first_name: 'Alan', last_name: 'Turing' }] },
  });
  const form = new FormData();
  form.append('auto_approve', 'true');
  form.append('registrants', JSON.stringify([{ email: `zoom-form-${tag}@example.com`, first_name: 'Katherine' }]));
  await call('POST', z, { expect: 201, body: form });
  await call('POST', z, { expect: 400, body: { registrants: [{ first_name: 'No address' }] } });
  await call('POST', z, { expect: 401, token: false, body: { registrants: [] } });
  await call('POST', '/v2/webinars/00000000-0000-4000-8000-000000000000/batch_registrants', {
    expect: 404, body: { registrants: [{ email: `z404-${tag}@example.com`, first_name: 'N' }] },
  });
}

async function main() {
  if (!BASE || !TOKEN) {
    console.error('check_live.js: API_URL and BULKREG_TOKEN must be set');
    process.exit(2);
  }
  api = await SwaggerParser.validate(process.argv[2]);
  /* OpenAPI 3.0 ignores `nullable` without a `type` beside it (an allOf of a
   * $ref does not count): such a member is not nullable for a client. */
  (function lint(o, at) {
    if (!o || typeof o !== 'object') return;
    if (o.nullable !== undefined && o.type === undefined) problems.push(`${at}: nullable without type`);
    for (const [k, v] of Object.entries(o)) lint(v, `${at}/${k}`);
  })(await SwaggerParser.parse(process.argv[2]), '#');
  if (problems.length) {
    for (const p of problems) console.log(`PROBLEM ${p}`);
    process.exit(1);
  }
  ajv = new Ajv({ strict: false, allErrors: true });
  addFormats(ajv);
  await operations();

  for (const [template, item] of Object.entries(api.paths)) {
    for (const m of METHODS) {
      if (item[m] && !seen.has(`${m.toUpperCase()} ${template}`)) {
        problems.push(`${m.toUpperCase()} ${template}: never exercised (add it to check_live.js)`);
      }
    }
  }
  for (const [key, statuses] of [...seen.entries()].sort()) {
    console.log(`${key}: ${[...statuses].sort().join(' ')}`);
  }
  console.log(`${checked} responses checked against ${process.argv[2]}; ${problems.length} problems`);
  for (const p of problems) console.log(`PROBLEM ${p}`);
  process.exit(problems.length ? 1 : 0);
}

main().catch((e) => {
  for (const p of problems) console.log(`PROBLEM ${p}`);
  console.error(e);
  process.exit(1);
});
