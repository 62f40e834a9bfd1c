// Package jsonkind names, in words for an error message, the JSON type that a Go type decodes
// from: the cloud API's and the twin topics' "field must be an object" answers share it.
package jsonkind
