package kubeapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/tetherhub/tether/resource"
)

// Table output: kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and
// prints the columns the server chooses. Tables are built from the stored JSON on the way out;
// they are for people, so they are off the hot path of informers and edges.

// tableRequest is what a client asked of a table: its apiVersion and what each row carries.
type tableRequest struct {
	apiVersion    string // meta.k8s.io/v1 or meta.k8s.io/v1beta1
	includeObject string // None, Metadata (default) or Object
}

// wantsTable reads the Accept header. Clients list a table first and plain JSON as a fallback;
// the first clause this server can produce wins.
func wantsTable(accept string, q map[string][]string) (tableRequest, bool) {
	for _, clause := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(clause))
		if err != nil {
			continue
		}
		if mt != "application/json" && mt != "*/*" && mt != "application/*" {
			continue
		}
		if params["as"] != "Table" {
			return tableRequest{}, false
		}
		if params["g"] != metav1.GroupName || (params["v"] != "v1" && params["v"] != "v1beta1") {
			continue
		}
		t := tableRequest{apiVersion: metav1.GroupName + "/" + params["v"], includeObject: "Metadata"}
		if v := q["includeObject"]; len(v) > 0 && v[0] != "" {
			t.includeObject = v[0]
		}
		return t, true
	}
	return tableRequest{}, false
}

func checkIncludeObject(t tableRequest) error {
	switch t.includeObject {
	case "None", "Metadata", "Object":
		return nil
	}
	return BadRequest("includeObject must be None, Metadata or Object, not %q", t.includeObject)
}

// column is one column of a kind's table.
type column struct {
	def  metav1.TableColumnDefinition
	cell func(o obj, now time.Time) any
}

// obj is a decoded object, read by path.
type obj map[string]any

func (o obj) get(path ...string) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

func (o obj) str(path ...string) string {
	switch v := o.get(path...).(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	}
	return ""
}

func (o obj) list(path ...string) []any {
	l, _ := o.get(path...).([]any)
	return l
}

func col(name, typ, desc string, priority int32, cell func(o obj, now time.Time) any) column {
	format := ""
	if name == "Name" {
		format = "name"
	}
	return column{def: metav1.TableColumnDefinition{Name: name, Type: typ, Format: format, Description: desc, Priority: priority}, cell: cell}
}

func str(path ...string) func(o obj, _ time.Time) any {
	return func(o obj, _ time.Time) any { return orNone(o.str(path...)) }
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func age(o obj, now time.Time) any {
	t, err := time.Parse(time.RFC3339, o.str("metadata", "creationTimestamp"))
	if err != nil {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

func count(path ...string) func(o obj, _ time.Time) any {
	return func(o obj, _ time.Time) any {
		switch v := o.get(path...).(type) {
		case map[string]any:
			return int64(len(v))
		case []any:
			return int64(len(v))
		}
		return int64(0)
	}
}

// columns returns the table columns of a kind: Name first, Age where kubectl puts it.
func columns(info resource.Info) []column {
	name := col("Name", "string", "Name must be unique within a namespace.", 0, str("metadata", "name"))
	ageCol := col("Age", "string", "Time since the object was created.", 0, age)
	var mid, wide []column
	switch info.GroupResource() {
	case resource.Pods:
		mid = []column{
			col("Ready", "string", "Ready containers of all containers.", 0, podReady),
			col("Status", "string", "The pod's phase, or why it is not running.", 0, podStatus),
			col("Restarts", "integer", "Container restarts.", 0, podRestarts),
		}
		wide = []column{
			col("IP", "string", "The pod's IP address.", 1, str("status", "podIP")),
			col("Node", "string", "The node the pod is bound to.", 1, str("spec", "nodeName")),
		}
	case resource.Nodes:
		mid = []column{
			col("Status", "string", "The node's Ready condition.", 0, nodeStatus),
			col("Group", "string", "The NodeGroup the node belongs to.", 0, str("metadata", "labels", "apps.kubeedge.io/belonging-to")),
		}
		wide = []column{
			col("Version", "string", "The edge agent's version.", 1, str("status", "nodeInfo", "kubeletVersion")),
			col("Internal-IP", "string", "The node's first internal address.", 1, nodeIP),
		}
	case resource.ConfigMaps:
		mid = []column{col("Data", "integer", "Number of data entries.", 0, dataCount)}
	case resource.Secrets:
		mid = []column{
			col("Type", "string", "The secret's type.", 0, func(o obj, _ time.Time) any {
				if t := o.str("type"); t != "" {
					return t
				}
				return "Opaque"
			}),
			col("Data", "integer", "Number of data entries.", 0, dataCount),
		}
	case resource.Services:
		mid = []column{
			col("Type", "string", "The service's type.", 0, func(o obj, _ time.Time) any {
				if t := o.str("spec", "type"); t != "" {
					return t
				}
				return "ClusterIP"
			}),
			col("Cluster-IP", "string", "The service's cluster IP.", 0, str("spec", "clusterIP")),
			col("Port(s)", "string", "The service's ports.", 0, servicePorts),
		}
	case resource.Namespaces:
		mid = []column{col("Status", "string", "The namespace's phase.", 0, func(o obj, _ time.Time) any {
			if p := o.str("status", "phase"); p != "" {
				return p
			}
			return "Active"
		})}
	case resource.EndpointSlices:
		mid = []column{
			col("AddressType", "string", "The slice's address type.", 0, str("addressType")),
			col("Ports", "string", "The slice's ports.", 0, slicePorts),
			col("Endpoints", "string", "The slice's addresses.", 0, sliceEndpoints),
		}
	case resource.Devices:
		mid = []column{
			col("Model", "string", "The DeviceModel the device follows.", 0, str("spec", "deviceModelRef", "name")),
			col("Node", "string", "The node the device is attached to.", 0, str("spec", "nodeName")),
			col("State", "string", "The device's last reported state.", 0, func(o obj, _ time.Time) any {
				if s := o.str("status", "state"); s != "" {
					return s
				}
				return "unknown"
			}),
		}
		wide = []column{col("Last-Online", "string", "When the device was last online.", 1, str("status", "lastOnlineTime"))}
	case resource.DeviceModels:
		mid = []column{
			col("Protocol", "string", "The protocol the model's devices speak.", 0, str("spec", "protocol")),
			col("Properties", "integer", "Number of properties.", 0, count("spec", "properties")),
		}
	case resource.NodeGroups:
		mid = []column{col("Nodes", "string", "The nodes in the group.", 0, groupNodes)}
		wide = []column{col("Selector", "string", "The labels that select nodes.", 1, groupSelector)}
	}
	out := append([]column{name}, mid...)
	out = append(out, ageCol)
	return append(out, wide...)
}

func dataCount(o obj, _ time.Time) any {
	n := 0
	for _, f := range []string{"data", "binaryData", "stringData"} {
		if m, ok := o.get(f).(map[string]any); ok {
			n += len(m)
		}
	}
	return int64(n)
}

func podReady(o obj, _ time.Time) any {
	total := len(o.list("spec", "containers"))
	ready := 0
	for _, c := range o.list("status", "containerStatuses") {
		if cs, ok := c.(map[string]any); ok && cs["ready"] == true {
			ready++
		}
	}
	return fmt.Sprintf("%d/%d", ready, total)
}

func podStatus(o obj, _ time.Time) any {
	if o.get("metadata", "deletionTimestamp") != nil {
		return "Terminating"
	}
	if r := o.str("status", "reason"); r != "" {
		return r
	}
	if p := o.str("status", "phase"); p != "" {
		return p
	}
	return "Pending"
}

func podRestarts(o obj, _ time.Time) any {
	var n int64
	for _, c := range o.list("status", "containerStatuses") {
		if cs, ok := c.(map[string]any); ok {
			if v, ok := cs["restartCount"].(json.Number); ok {
				i, _ := v.Int64()
				n += i
			}
		}
	}
	return n
}

func nodeStatus(o obj, _ time.Time) any {
	for _, c := range o.list("status", "conditions") {
		cm, ok := c.(map[string]any)
		if !ok || cm["type"] != "Ready" {
			continue
		}
		if cm["status"] == "True" {
			return "Ready"
		}
		return "NotReady"
	}
	return "Unknown"
}

func nodeIP(o obj, _ time.Time) any {
	for _, a := range o.list("status", "addresses") {
		if am, ok := a.(map[string]any); ok && am["type"] == "InternalIP" {
			if s, ok := am["address"].(string); ok {
				return s
			}
		}
	}
	return "<none>"
}

func servicePorts(o obj, _ time.Time) any {
	var out []string
	for _, p := range o.list("spec", "ports") {
		pm, ok := p.(map[string]any)
		if !ok {
			continue
		}
		proto, _ := pm["protocol"].(string)
		if proto == "" {
			proto = "TCP"
		}
		out = append(out, fmt.Sprintf("%v/%s", pm["port"], proto))
	}
	return orNone(strings.Join(out, ","))
}

func slicePorts(o obj, _ time.Time) any {
	var out []string
	for _, p := range o.list("ports") {
		if pm, ok := p.(map[string]any); ok && pm["port"] != nil {
			out = append(out, fmt.Sprint(pm["port"]))
		}
	}
	return orNone(strings.Join(out, ","))
}

func sliceEndpoints(o obj, _ time.Time) any {
	var out []string
	for _, e := range o.list("endpoints") {
		em, ok := e.(map[string]any)
		if !ok {
			continue
		}
		addrs, _ := em["addresses"].([]any)
		for _, a := range addrs {
			if s, ok := a.(string); ok {
				out = append(out, s)
			}
		}
	}
	if len(out) > 3 {
		return fmt.Sprintf("%s + %d more...", strings.Join(out[:3], ","), len(out)-3)
	}
	return orNone(strings.Join(out, ","))
}

// groupNodes lists a NodeGroup's members: the nodes its status reports as selected or, before
// anything reported, the nodes its spec names.
func groupNodes(o obj, _ time.Time) any {
	var out []string
	if sts := o.list("status", "nodeStatuses"); len(sts) > 0 {
		for _, s := range sts {
			sm, ok := s.(map[string]any)
			if !ok {
				continue
			}
			if sel, _ := sm["selectionStatus"].(string); sel != "" && sel != "Succeeded" {
				continue
			}
			if n, ok := sm["nodeName"].(string); ok {
				out = append(out, n)
			}
		}
	} else {
		for _, n := range o.list("spec", "nodes") {
			if s, ok := n.(string); ok {
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return orNone(strings.Join(out, ","))
}

func groupSelector(o obj, _ time.Time) any {
	m, _ := o.get("spec", "matchLabels").(map[string]any)
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(out)
	return orNone(strings.Join(out, ","))
}

// tableWriter turns stored objects into Table JSON.
type tableWriter struct {
	req  tableRequest
	cols []column
	now  time.Time
}

func newTableWriter(req tableRequest, info resource.Info, now time.Time) *tableWriter {
	return &tableWriter{req: req, cols: columns(info), now: now}
}

// row builds one row from an object's JSON.
func (t *tableWriter) row(raw []byte) (metav1.TableRow, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var o obj
	if err := d.Decode(&o); err != nil {
		return metav1.TableRow{}, fmt.Errorf("kubeapi: table row: %w", err)
	}
	row := metav1.TableRow{Cells: make([]any, len(t.cols))}
	for i, c := range t.cols {
		row.Cells[i] = c.cell(o, t.now)
	}
	switch t.req.includeObject {
	case "Object":
		row.Object = runtime.RawExtension{Raw: raw}
	case "Metadata":
		md, _ := json.Marshal(map[string]any{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
		row.Object = runtime.RawExtension{Raw: md}
	}
	return row, nil
}

// table encodes a Table of items with the given list metadata.
func (t *tableWriter) table(items [][]byte, rv, cont string, remaining *int64) ([]byte, error) {
	tbl := metav1.Table{
		TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: t.req.apiVersion},
		ListMeta: metav1.ListMeta{ResourceVersion: rv, Continue: cont, RemainingItemCount: remaining},
		Rows:     make([]metav1.TableRow, 0, len(items)),
	}
	for _, c := range t.cols {
		tbl.ColumnDefinitions = append(tbl.ColumnDefinitions, c.def)
	}
	for _, raw := range items {
		r, err := t.row(raw)
		if err != nil {
			return nil, err
		}
		tbl.Rows = append(tbl.Rows, r)
	}
	return json.Marshal(tbl)
}
