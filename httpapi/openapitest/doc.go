// Package openapitest tests package httpapi against real stores (sqlite,
// Postgres, Redis and memstream), validating every answer of the API
// against its OpenAPI document (httpapi/openapi.json) with
// github.com/pb33f/libopenapi-validator, so that the document cannot drift
// from the code. It is a module of its own, like dashboard/browsertest, so
// that the validator's dependencies stay out of Peonify's module graph.
package openapitest
