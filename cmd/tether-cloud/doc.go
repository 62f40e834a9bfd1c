// Command tether-cloud runs the cloud side of tether: the store, the Kubernetes-style API, the
// join service and the hub that keeps every edge node in sync.
package main
