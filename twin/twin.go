package twin

import (
	"fmt"
	"maps"
	"slices"
)

// Twin is the twin state of one device as the edge keeps it. The zero value is
// an empty twin. Functions here never modify a Twin passed to them; they return
// a new one that may share *Value pointers with the old (Values are never
// modified after creation, so sharing is safe).
type Twin struct {
	// Props holds one entry per property that has an expected or an actual.
	Props map[string]Property `json:"props,omitempty"`
	// DesiredVersion is the version of the newest desired state applied. It is
	// kept at the twin level because a property removed from the spec leaves no
	// entry to remember its version, and an older spec must not bring it back.
	DesiredVersion Version `json:"desired_version"`
	// ActualFloors holds, per property whose actual a device deleted, that actual's timestamp:
	// the next actual of the property is stamped after it, as after a stored one. Without it, a
	// value reported after a delete could carry an older timestamp than the deleted one (they
	// run ahead of the clock in a burst, or after a clock step back) and lose the cloud's
	// newest-wins merge to it. Bounded by the model's properties.
	ActualFloors map[string]int64 `json:"actual_floors,omitempty"`
}

// Property is one twin property.
type Property struct {
	Expected        *Value  `json:"expected,omitempty"` // desired, written only from the cloud's spec
	Actual          *Value  `json:"actual,omitempty"`   // reported, written only by the device
	Optional        bool    `json:"optional"`           // may the device delete it
	Type            string  `json:"type"`               // canonical type (TypeInt, …)
	ExpectedVersion Version `json:"expected_version"`
	ActualVersion   Version `json:"actual_version"`
}

// Value is one side of a Property.
type Value struct {
	Value     string `json:"value"`
	Timestamp int64  `json:"timestamp"` // Unix ms when the edge accepted it
}

// Version orders writes to one side of a property: Cloud counts writes from the
// cloud (the Device's revision), Edge counts writes at the edge.
type Version struct {
	Cloud uint64 `json:"cloud"`
	Edge  uint64 `json:"edge"`
}

// String formats v for reasons and logs.
func (v Version) String() string { return fmt.Sprintf("{cloud %d, edge %d}", v.Cloud, v.Edge) }

// olderThan reports whether v loses against w: KubeEdge's rule, an update is
// refused if the stored cloud or edge version is higher than the one it carries.
func (v Version) olderThan(w Version) bool {
	return w.Cloud > v.Cloud || w.Edge > v.Edge
}

// Change is the change of one property made by ApplyReport or ApplyDesired.
// Last is nil when the property did not exist before, Current when it no
// longer exists.
type Change struct {
	Name          string
	Last, Current *Property
}

// Clone returns a copy of t that shares no map with it.
func (t Twin) Clone() Twin {
	return Twin{Props: maps.Clone(t.Props), DesiredVersion: t.DesiredVersion, ActualFloors: maps.Clone(t.ActualFloors)}
}

// ApplyReport applies a device's twin update to cur and returns the new twin
// and the properties that changed, sorted by name. types maps the DeviceModel's
// property names to their types (as in the model, any case).
//
// Rules, each a decision where KubeEdge and SPEC leave room:
//
//   - actual.value sets actual, stamped now (Unix ms), and bumps the actual
//     side's edge version. The timestamp never goes backwards for a property
//     (at least the previous one + 1, also across a delete: ActualFloors), so a
//     clock step back at the edge cannot make the cloud's newest-wins merge drop
//     a newer report.
//   - A value equal to the stored actual is not a change: no version bump, no
//     new timestamp, nothing to store or send upstream. Mappers report on a
//     timer, and a write per poll is the load KubeEdge drowns in.
//   - expected is ignored, not rejected: the cloud alone writes it, and a mapper
//     echoing a stale expected next to a fresh actual must not lose the actual.
//   - metadata.type is ignored: the DeviceModel type is checked.
//   - null deletes the property's actual (bumping its edge version); the
//     property disappears when it has no expected either. Deleting an absent
//     property is a no-op, so a redelivered delete succeeds. A property the
//     cloud declared (not Optional) cannot be deleted: ErrNotOptional.
//   - A property neither in types nor in cur is rejected (ErrUnknownProperty):
//     Device.status.twins must name model properties, and it keeps a device
//     from growing its twin without bound. A property already in cur but gone
//     from the model keeps its stored type.
//   - optional is honoured only when the report creates the property (default
//     true, as in KubeEdge).
//
// All or nothing: if any entry breaks a rule, err is an *Error (code 400, or
// 500 for an unsupported model type), next is cur and changed is nil. Size
// limits are DecodeUpdate's; ApplyReport rechecks only property names.
func ApplyReport(cur Twin, upd Update, types map[string]string, now int64) (next Twin, changed []Change, err error) {
	var nbuf, kbuf [8]string
	names := sortedKeys(nbuf[:0], upd.Twin)
	// Validate everything first so a failure leaves nothing half-applied.
	kinds := kbuf[:0] // canonical type of names[i], "" where it reports no actual
	for _, name := range names {
		kinds = append(kinds, "")
		if err := checkKey(name); err != nil {
			return cur, nil, err
		}
		r := upd.Twin[name]
		p, exists := cur.Props[name]
		if r == nil {
			if exists && !p.Optional {
				return cur, nil, badRequest(ErrNotOptional,
					"twin %s is declared by the cloud and cannot be deleted by the device", quote(name))
			}
			continue
		}
		if r.Actual == nil {
			continue
		}
		typ, inModel := types[name]
		if !inModel {
			if !exists {
				return cur, nil, badRequest(ErrUnknownProperty, "twin %s is not a property of the device model", quote(name))
			}
			typ = p.Type
		}
		nt, err := NormalizeType(typ)
		if err != nil {
			return cur, nil, newError(CodeInternal, ErrModelType,
				"twin %s: device model type %s is not supported", quote(name), quote(typ))
		}
		if !validValue(nt, *r.Actual) {
			return cur, nil, badRequest(ErrType, "twin %s: value %s is not a valid %s", quote(name), quote(*r.Actual), nt)
		}
		kinds[len(kinds)-1] = nt
	}

	next = cur.Clone()
	if next.Props == nil {
		next.Props = make(map[string]Property)
	}
	for i, name := range names {
		r := upd.Twin[name]
		old, exists := cur.Props[name]
		switch {
		case r == nil:
			if !exists || old.Actual == nil {
				continue
			}
			p := old
			p.Actual = nil
			p.ActualVersion.Edge++
			if next.ActualFloors == nil {
				next.ActualFloors = map[string]int64{}
			}
			next.ActualFloors[name] = old.Actual.Timestamp
			if p.Expected == nil {
				delete(next.Props, name)
				changed = append(changed, Change{Name: name, Last: &old})
				continue
			}
			next.Props[name] = p
			changed = append(changed, Change{Name: name, Last: &old, Current: &p})
		case r.Actual != nil:
			nt := kinds[i]
			if exists && old.Actual != nil && old.Actual.Value == *r.Actual && old.Type == nt {
				continue
			}
			p := old
			if !exists {
				p = Property{Optional: true}
				if r.Optional != nil {
					p.Optional = *r.Optional
				}
			}
			floor, deleted := cur.ActualFloors[name]
			if old.Actual != nil {
				floor = old.Actual.Timestamp
			}
			ts := now
			if (old.Actual != nil || deleted) && ts <= floor {
				ts = floor + 1
			}
			if deleted {
				delete(next.ActualFloors, name)
			}
			p.Actual = &Value{Value: *r.Actual, Timestamp: ts}
			p.ActualVersion.Edge++
			p.Type = nt
			next.Props[name] = p
			c := Change{Name: name, Current: &p}
			if exists {
				c.Last = &old
			}
			changed = append(changed, c)
		}
	}
	return next, changed, nil
}

// Desired is the cloud's desired state for one device: the desired values of
// Device.spec.properties[] as of one revision of the Device.
type Desired struct {
	// Version is the version of the whole spec: Cloud is the Device's revision
	// (as KubeEdge's cloud uses the resourceVersion), Edge is 0 unless the
	// cloud echoes an edge version back. One version for the whole spec, not
	// one per property, because a removal carries no property to hold one.
	Version Version
	// Props maps property names to their desired values. A property absent
	// here, or with an empty Value, has no desired value: KubeEdge v1beta1's
	// desired is a non-pointer struct, so an unset desired arrives as "".
	Props map[string]DesiredValue
}

// DesiredValue is one property's desired value.
type DesiredValue struct {
	Value string
	Type  string // the DeviceModel type, any case; "" is STRING
	// Timestamp is when the cloud set it (Unix ms), e.g. from
	// desired.metadata.timestamp; 0 means use now.
	Timestamp int64
}

// ApplyDesired applies the cloud's desired state to cur and returns the new
// twin and the properties that changed, sorted by name.
//
//   - A desired older than what was applied before (d.Version older than
//     cur.DesiredVersion or than any property's ExpectedVersion) is refused
//     whole with ErrStale (code 409) and nothing changes; the caller then
//     reports the current twin upstream so the cloud converges.
//   - Each desired value sets expected and the expected version; properties it
//     creates are not Optional (declared by the cloud, as in KubeEdge).
//   - Properties with an expected that d no longer names lose their expected,
//     and disappear if they have no actual either.
//   - An equal value is not a change, but its expected version and
//     next.DesiredVersion still move to d.Version, so an older spec is refused
//     later. Callers store next after every successful call, even when changed
//     is empty.
//   - Properties only the device reports (no expected before or now) are left
//     alone.
//   - All or nothing: a bad name (ErrKey), an unsupported type (ErrModelType)
//     or a value not of its type (ErrType) refuses the whole desired state, as
//     a partly applied spec would be a state the cloud never asked for.
func ApplyDesired(cur Twin, d Desired, now int64) (next Twin, changed []Change, err error) {
	if d.Version.olderThan(cur.DesiredVersion) {
		return cur, nil, newError(CodeConflict, ErrStale,
			"desired version %v is older than the applied version %v", d.Version, cur.DesiredVersion)
	}
	for _, name := range slices.Sorted(maps.Keys(cur.Props)) {
		if p := cur.Props[name]; d.Version.olderThan(p.ExpectedVersion) {
			return cur, nil, newError(CodeConflict, ErrStale,
				"desired version %v of twin %s is older than the stored version %v", d.Version, quote(name), p.ExpectedVersion)
		}
	}
	desired := make(map[string]DesiredValue, len(d.Props))
	kinds := make(map[string]string, len(d.Props))
	for _, name := range slices.Sorted(maps.Keys(d.Props)) {
		dv := d.Props[name]
		if dv.Value == "" {
			continue
		}
		if err := checkKey(name); err != nil {
			return cur, nil, err
		}
		nt, err := NormalizeType(dv.Type)
		if err != nil {
			return cur, nil, newError(CodeInternal, ErrModelType,
				"twin %s: device model type %s is not supported", quote(name), quote(dv.Type))
		}
		if !validValue(nt, dv.Value) {
			return cur, nil, badRequest(ErrType, "twin %s: desired value %s is not a valid %s", quote(name), quote(dv.Value), nt)
		}
		desired[name] = dv
		kinds[name] = nt
	}

	next = cur.Clone()
	if next.Props == nil {
		next.Props = make(map[string]Property)
	}
	next.DesiredVersion = d.Version
	names := slices.Sorted(maps.Keys(desired))
	for name := range cur.Props {
		if _, ok := desired[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		old, exists := cur.Props[name]
		dv, want := desired[name]
		if !want && old.Expected == nil {
			continue // a device-only property: the cloud has no say in it
		}
		p := old
		if !exists {
			p = Property{Optional: false}
		}
		p.ExpectedVersion = d.Version
		if !want {
			p.Expected = nil
			if p.Actual == nil {
				delete(next.Props, name)
				changed = append(changed, Change{Name: name, Last: &old})
				continue
			}
			next.Props[name] = p
			changed = append(changed, Change{Name: name, Last: &old, Current: &p})
			continue
		}
		nt := kinds[name]
		if exists && old.Expected != nil && old.Expected.Value == dv.Value && old.Type == nt {
			next.Props[name] = p
			continue
		}
		ts := dv.Timestamp
		if ts == 0 {
			ts = now
		}
		p.Expected = &Value{Value: dv.Value, Timestamp: ts}
		p.Type = nt
		next.Props[name] = p
		c := Change{Name: name, Current: &p}
		if exists {
			c.Last = &old
		}
		changed = append(changed, c)
	}
	return next, changed, nil
}

// Delta returns every property whose expected is set and differs from its
// actual (or has no actual), mapped to the expected value: the delta field of
// twin/update/delta. An empty map means nothing for the device to do.
func Delta(t Twin) map[string]string {
	d := make(map[string]string)
	for name, p := range t.Props {
		if p.Expected != nil && (p.Actual == nil || p.Actual.Value != p.Expected.Value) {
			d[name] = p.Expected.Value
		}
	}
	return d
}

// HasDelta reports whether Delta(t) is non-empty, without building it.
func HasDelta(t Twin) bool {
	for _, p := range t.Props {
		if p.Expected != nil && (p.Actual == nil || p.Actual.Value != p.Expected.Value) {
			return true
		}
	}
	return false
}
