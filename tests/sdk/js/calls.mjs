// The SDK's calls for endpoints the engine serves, each with the endpoint. Every other call
// of the SDK is for an endpoint the engine does not serve (customers, entitlements,
// billing, ...): sdk.test.mjs sends each one and expects the engine's 404.
export const SERVED = {
  'events.ingest': 'POST /api/v1/events',
  'events.list': 'GET /api/v1/events',
  'meters.create': 'POST /api/v1/meters',
  'meters.get': 'GET /api/v1/meters/{meterIdOrSlug}',
  'meters.list': 'GET /api/v1/meters',
  'meters.update': 'PUT /api/v1/meters/{meterIdOrSlug}',
  'meters.delete': 'DELETE /api/v1/meters/{meterIdOrSlug}',
  'meters.query': 'GET /api/v1/meters/{meterIdOrSlug}/query',
  'meters.queryPost': 'POST /api/v1/meters/{meterIdOrSlug}/query',
  'meters.listGroupByValues': 'GET /api/v1/meters/{meterIdOrSlug}/group-by/{groupByKey}/values',
}

// Every call a client offers, as resource.method (nested resources joined by dots).
export function callsOf(client) {
  const calls = []
  const walk = (resource, prefix) => {
    for (const name of Object.getOwnPropertyNames(Object.getPrototypeOf(resource))) {
      if (name !== 'constructor' && typeof resource[name] === 'function') calls.push(`${prefix}${name}`)
    }
    for (const [name, value] of Object.entries(resource)) {
      if (name !== 'client' && value && typeof value === 'object' && Object.getPrototypeOf(value) !== Object.prototype) {
        walk(value, `${prefix}${name}.`)
      }
    }
  }
  for (const [name, value] of Object.entries(client)) {
    if (name !== 'config' && name !== 'client' && value && typeof value === 'object') walk(value, `${name}.`)
  }
  return calls.sort()
}
