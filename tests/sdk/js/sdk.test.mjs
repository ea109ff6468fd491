// The official JavaScript SDK (@openmeter/sdk, unmodified) against a running engine:
// every call for an endpoint the engine serves, with answers checked against the events
// sent; every other call answered 404. BPOM_SDK_API_URL names the engine's API.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { before, describe, test } from 'node:test'

import { HTTPError, OpenMeter } from '@openmeter/sdk'
import { OpenMeter as PortalClient } from '@openmeter/sdk/portal'

import { SERVED, callsOf } from './calls.mjs'

const API_URL = process.env.BPOM_SDK_API_URL
assert.ok(API_URL, 'BPOM_SDK_API_URL must name the engine API (tests/sdk/test_js_sdk.py sets it)')
// The sink stores events asynchronously: how long a query may take to see them all.
const CONVERGENCE_MS = 90_000
const POLL_MS = 200

const run = randomBytes(4).toString('hex')
const eventType = `js.sdk.${run}`
const HOUR = 3_600_000
const T0 = Date.UTC(2024, 6, 1, 12, 0, 0) // 2024-07-01T12:00:00Z, Berlin at +02:00
const FROM = new Date(T0 - HOUR)
const TO = new Date(T0 + 48 * HOUR)

// What is sent; `region` missing in the last one (it reads "").
const EVENTS = [
  { subject: `acme-${run}`, at: T0, data: { tokens: 10, model: 'gpt-4', region: 'eu', user: 'u1' } },
  { subject: `acme-${run}`, at: T0 + 5 * 60_000, data: { tokens: 5, model: 'gpt-3', region: 'us', user: 'u2' } },
  { subject: `beta-${run}`, at: T0 + 2 * HOUR, data: { tokens: 7, model: 'gpt-4', region: 'eu', user: 'u1' } },
  { subject: `beta-${run}`, at: T0 + 2 * HOUR + 30_000, data: { tokens: '3.5', model: 'gpt-4', region: 'ap', user: 'u3' } },
  { subject: `acme-${run}`, at: T0 + 25 * HOUR, data: { tokens: 1, model: 'gpt-3', user: 'u2' } },
]
const value = (e) => Number(e.data.tokens)
const region = (e) => e.data.region ?? ''

// The reference: each aggregation over a list of events, in time order.
const AGGREGATE = {
  SUM: (es) => es.reduce((s, e) => s + value(e), 0),
  COUNT: (es) => es.length,
  AVG: (es) => es.reduce((s, e) => s + value(e), 0) / es.length,
  MIN: (es) => Math.min(...es.map(value)),
  MAX: (es) => Math.max(...es.map(value)),
  LATEST: (es) => value(es.at(-1)),
  UNIQUE_COUNT: (es) => new Set(es.map((e) => e.data.user)).size,
}
const slugOf = (aggregation) => `js_${aggregation.toLowerCase()}_${run}`

// Calls made through the client, to check at the end that each served one was exercised.
const made = new Set()
function recorded(client) {
  for (const call of Object.keys(SERVED)) {
    const [resource, method] = call.split('.')
    const original = client[resource][method].bind(client[resource])
    client[resource][method] = (...args) => {
      made.add(call)
      return original(...args)
    }
  }
  return client
}
const om = recorded(new OpenMeter({ baseUrl: API_URL }))

async function until(what, read, done) {
  const deadline = Date.now() + CONVERGENCE_MS
  let last
  while (Date.now() < deadline) {
    last = await read()
    if (done(last)) return last
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
  assert.fail(`${what}: not reached within ${CONVERGENCE_MS} ms; last answer ${JSON.stringify(last)}`)
}

const iso = (d) => (d instanceof Date ? d.toISOString() : d)
// A query answer's rows as comparable tuples (the SDK turns every date-like string into a Date).
const rows = (answer, ...keys) =>
  answer.data
    .map((r) => [iso(r.windowStart), iso(r.windowEnd), r.subject, ...keys.map((k) => r.groupBy[k]), r.value])
    .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))

before(async () => {
  for (const aggregation of Object.keys(AGGREGATE)) {
    const created = await om.meters.create({
      slug: slugOf(aggregation),
      eventType,
      aggregation,
      ...(aggregation === 'COUNT' ? {} : { valueProperty: aggregation === 'UNIQUE_COUNT' ? '$.user' : '$.tokens' }),
      groupBy: { model: '$.model', region: '$.region' },
    })
    assert.equal(created.slug, slugOf(aggregation))
    assert.ok(created.createdAt instanceof Date)
  }
  // One event alone, with the SDK's defaults for id, source and specversion; the rest as a batch.
  const [first, ...rest] = EVENTS
  assert.equal(await om.events.ingest({ type: eventType, subject: first.subject, time: new Date(first.at), data: first.data }), undefined)
  await om.events.ingest(
    rest.map((e, i) => ({ id: `${run}-${i + 1}`, source: 'js-sdk-tier', type: eventType, subject: e.subject, time: new Date(e.at), data: e.data })),
  )
  await until(
    'all events counted',
    () => om.meters.query(slugOf('COUNT'), { from: FROM, to: TO }),
    (a) => a.data.length === 1 && a.data[0].value === EVENTS.length,
  )
})

describe('meters.query and meters.queryPost', () => {
  test('every aggregation over the whole range', async () => {
    for (const [aggregation, aggregate] of Object.entries(AGGREGATE)) {
      const answer = await om.meters.query(slugOf(aggregation), { from: FROM, to: TO, clientId: `c-${run}` })
      assert.deepEqual(rows(answer), [[FROM.toISOString(), TO.toISOString(), null, aggregate(EVENTS)]], aggregation)
      assert.equal(iso(answer.from), FROM.toISOString())
    }
  })

  test('DAY windows in a zone, by subject and model', async () => {
    const answer = await om.meters.query(slugOf('SUM'), {
      from: FROM,
      to: TO,
      windowSize: 'DAY',
      windowTimeZone: 'Europe/Berlin',
      subject: [`acme-${run}`, `beta-${run}`],
      groupBy: ['model'],
    })
    const dayStart = (t) => Math.floor((t + 2 * HOUR) / (24 * HOUR)) * 24 * HOUR - 2 * HOUR // Berlin, summer
    const want = new Map()
    for (const e of EVENTS) {
      const key = JSON.stringify([dayStart(e.at), e.subject, e.data.model])
      want.set(key, (want.get(key) ?? 0) + value(e))
    }
    const expected = [...want].map(([key, sum]) => {
      const [start, subject, model] = JSON.parse(key)
      return [new Date(start).toISOString(), new Date(start + 24 * HOUR).toISOString(), subject, model, sum]
    })
    assert.deepEqual(rows(answer, 'model'), expected.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))))
    assert.equal(answer.windowSize, 'DAY')
  })

  test('filterGroupBy and advancedMeterGroupByFilters in the query string', async () => {
    const total = async (query) => (await om.meters.query(slugOf('SUM'), { from: FROM, to: TO, ...query })).data.map((r) => r.value)
    const sum = (keep) => AGGREGATE.SUM(EVENTS.filter(keep))
    assert.deepEqual(await total({ filterGroupBy: { model: 'gpt-4' } }), [sum((e) => e.data.model === 'gpt-4')])
    assert.deepEqual(
      await total({ advancedMeterGroupByFilters: JSON.stringify({ region: { $nin: ['eu'] } }) }),
      [sum((e) => region(e) !== 'eu')],
    )
    assert.deepEqual(
      await total({
        advancedMeterGroupByFilters: JSON.stringify({ model: { $eq: 'gpt-4' }, region: { $or: [{ $eq: 'ap' }, { $in: ['eu'] }] } }),
      }),
      [sum((e) => e.data.model === 'gpt-4' && ['ap', 'eu'].includes(region(e)))],
    )
  })

  test('the POST form, with filterGroupBy lists and advanced filters', async () => {
    const byRegion = await om.meters.queryPost(slugOf('SUM'), {
      from: FROM,
      to: TO,
      groupBy: ['region'],
      filterGroupBy: { model: ['gpt-3'] },
    })
    const gpt3 = EVENTS.filter((e) => e.data.model === 'gpt-3')
    assert.deepEqual(
      rows(byRegion, 'region'),
      gpt3.map((e) => [FROM.toISOString(), TO.toISOString(), null, region(e), value(e)]).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    )
    const advanced = await om.meters.queryPost(slugOf('UNIQUE_COUNT'), {
      from: FROM,
      to: TO,
      windowSize: 'HOUR',
      advancedMeterGroupByFilters: { region: { $ne: '' }, model: { $and: [{ $ne: 'gpt-3' }] } },
    })
    const kept = EVENTS.filter((e) => region(e) !== '' && e.data.model !== 'gpt-3')
    const hours = new Map()
    for (const e of kept) hours.set(Math.floor(e.at / HOUR) * HOUR, [...(hours.get(Math.floor(e.at / HOUR) * HOUR) ?? []), e])
    assert.deepEqual(
      rows(advanced),
      [...hours].map(([h, es]) => [new Date(h).toISOString(), new Date(h + HOUR).toISOString(), null, AGGREGATE.UNIQUE_COUNT(es)]),
    )
  })

  test('meters.listGroupByValues: every value in the range, in byte order', async () => {
    assert.deepEqual(await om.meters.listGroupByValues(slugOf('COUNT'), 'region', { from: FROM, to: TO }), ['', 'ap', 'eu', 'us'])
    const early = await om.meters.listGroupByValues(slugOf('COUNT'), 'model', { from: FROM, to: new Date(T0 + HOUR) })
    assert.deepEqual(early, ['gpt-3', 'gpt-4'])
  })

  test("errors carry the engine's problem detail", async () => {
    await assert.rejects(
      om.meters.query(slugOf('SUM'), { windowTimeZone: 'Mars/Olympus_Mons' }),
      (error) => {
        assert.ok(error instanceof HTTPError)
        assert.equal(error.status, 400)
        assert.equal(error.title, 'Bad Request')
        assert.equal(error.getField('field'), 'windowTimeZone')
        assert.match(error.message, /invalid time zone/)
        return true
      },
    )
    await assert.rejects(om.meters.get(`no_such_${run}`), (error) => {
      assert.equal(error.status, 404)
      assert.match(error.message, new RegExp(`not found error: meter not found: no_such_${run}`))
      return true
    })
  })
})

describe('events', () => {
  test('events.list returns what was sent, with every filter', async () => {
    const acme = await om.events.list({ subject: `acme-${run}`, from: FROM, to: TO, limit: 100, clientId: `c-${run}` })
    const sent = EVENTS.filter((e) => e.subject === `acme-${run}`).sort((a, b) => b.at - a.at)
    assert.deepEqual(
      acme.map((item) => [iso(item.event.time), item.event.type, item.event.data]),
      sent.map((e) => [new Date(e.at).toISOString(), eventType, e.data]),
    )
    const defaulted = acme.at(-1).event // the one sent without id or source
    assert.equal(defaulted.source, '@openmeter/sdk')
    assert.match(defaulted.id, /^[0-9a-f-]{36}$/)
    assert.ok(acme.every((item) => item.ingestedAt instanceof Date && item.storedAt instanceof Date))

    const one = await om.events.list({ id: `${run}-2`, from: FROM })
    assert.deepEqual(one.map((item) => item.event.id), [`${run}-2`])
    assert.equal((await om.events.list({ subject: `acme-${run}`, from: FROM, to: new Date(T0 + HOUR), limit: 1 })).length, 1)
    const ingested = await om.events.list({ id: run, from: FROM, ingestedAtFrom: new Date(Date.now() - HOUR), ingestedAtTo: new Date(Date.now() + HOUR) })
    assert.equal(ingested.length, EVENTS.length - 1)
    assert.deepEqual(await om.events.list({ id: run, from: FROM, ingestedAtTo: new Date(Date.now() - HOUR) }), [])
  })

  test('customerId is refused by name: the engine has subjects, not customers', async () => {
    await assert.rejects(om.events.list({ customerId: ['01J00000000000000000000000'] }), (error) => {
      assert.equal(error.status, 400)
      assert.equal(error.getField('field'), 'customerId')
      return true
    })
  })
})

describe('meters CRUD', () => {
  test('create, get, list with its options, update, delete', async () => {
    const slug = `js_crud_${run}`
    const meter = await om.meters.create({ slug, eventType, aggregation: 'MAX', valueProperty: '$.tokens', description: 'crud' })
    assert.deepEqual(await om.meters.get(slug), meter)
    assert.deepEqual(await om.meters.get(meter.id), meter)
    assert.ok((await om.meters.list()).some((m) => m.slug === slug))
    // The SDK types no list parameters; untyped options pass them through.
    const newestFirst = await om.meters.list({ params: { query: { orderBy: 'createdAt', order: 'DESC' } } })
    assert.equal(newestFirst[0].slug, slug)

    const updated = await om.meters.update(slug, { name: 'Peak tokens', groupBy: { model: '$.model' } })
    assert.equal(updated.name, 'Peak tokens')
    assert.deepEqual(updated.groupBy, { model: '$.model' })
    const byModel = await om.meters.query(slug, { from: FROM, to: TO, groupBy: ['model'] })
    const peak = (model) => Math.max(...EVENTS.filter((e) => e.data.model === model).map(value))
    assert.deepEqual(rows(byModel, 'model').map((r) => r.slice(3)), [['gpt-3', peak('gpt-3')], ['gpt-4', peak('gpt-4')]])

    assert.equal(await om.meters.delete(slug), undefined)
    assert.ok(!(await om.meters.list()).some((m) => m.slug === slug))
    const withDeleted = await om.meters.list({ params: { query: { includeDeleted: true } } })
    const deleted = withDeleted.find((m) => m.id === meter.id)
    assert.ok(deleted.deletedAt instanceof Date)
    await assert.rejects(om.meters.get(slug), (error) => error.status === 404)
  })
})

describe('coverage', () => {
  test('every other call of the SDK is for an endpoint the engine does not serve: 404', async () => {
    const paths = []
    const recording = async (input, init) => {
      const request = input instanceof Request ? input : new Request(input, init)
      paths.push(`${request.method} ${new URL(request.url).pathname}`)
      return fetch(request)
    }
    const client = new OpenMeter({ baseUrl: API_URL, fetch: recording })
    const calls = callsOf(client)
    for (const call of Object.keys(SERVED)) assert.ok(calls.includes(call), `the SDK has no ${call} any more`)
    const others = calls.filter((call) => !(call in SERVED))
    assert.ok(others.length > 100, `${others.length} other calls`)
    const answers = []
    for (const call of others) {
      const path = call.split('.')
      const method = path.pop()
      const resource = path.reduce((object, name) => object[name], client)
      paths.length = 0
      try {
        await resource[method](...Array.from({ length: resource[method].length }, () => 'x'))
        answers.push(`${call}: answered 2xx (${paths.join(', ')})`)
      } catch (error) {
        if (!(error instanceof HTTPError) || error.status !== 404) answers.push(`${call}: ${error.status ?? error.message} (${paths.join(', ')})`)
      }
    }
    const portal = new PortalClient({ baseUrl: API_URL, portalToken: 'x', fetch: recording })
    await assert.rejects(portal.query('x', {}), (error) => error.status === 404)
    assert.deepEqual(answers, [], 'calls the engine answered otherwise than 404')
  })
})

test('each call for an endpoint the engine serves was made', { concurrency: false }, () => {
  assert.deepEqual(Object.keys(SERVED).filter((call) => !made.has(call)), [])
})
