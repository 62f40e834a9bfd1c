package twin

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"unicode/utf8"
)

// randString draws strings that exercise every escaping rule: ASCII, control characters,
// HTML characters, quotes, multi-byte runes, the line separators and invalid UTF-8.
func randString(r *rand.Rand) string {
	pieces := []string{"a", "Z", "0", " ", `"`, `\`, "<", ">", "&", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f",
		"é", "☀", "\u2028", "\u2029", "\xff", "\xc3", "😀", "/", "'"}
	var b []byte
	for range r.IntN(8) {
		b = append(b, pieces[r.IntN(len(pieces))]...)
	}
	return string(b)
}

func randEntry(r *rand.Rand) *Entry {
	if r.IntN(6) == 0 {
		return nil
	}
	e := &Entry{}
	val := func() *EntryValue {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			return &EntryValue{}
		}
		v := randString(r)
		ev := &EntryValue{Value: &v}
		if r.IntN(3) > 0 {
			ev.Metadata = &ValueMetadata{Timestamp: r.Int64N(3) * 1700000000000}
		}
		return ev
	}
	e.Expected, e.Actual = val(), val()
	if r.IntN(2) == 0 {
		o := r.IntN(2) == 0
		e.Optional = &o
	}
	if r.IntN(3) > 0 {
		e.Metadata = &TypeMetadata{Type: []string{"", "int", randString(r)}[r.IntN(3)]}
	}
	if r.IntN(3) == 0 {
		e.ExpectedVersion = &Version{Cloud: r.Uint64(), Edge: r.Uint64N(10)}
		e.ActualVersion = &Version{Edge: r.Uint64N(10)}
	}
	return e
}

func randEntries(r *rand.Rand) map[string]*Entry {
	if r.IntN(8) == 0 {
		return nil
	}
	m := map[string]*Entry{}
	for range r.IntN(5) {
		m[randString(r)] = randEntry(r)
	}
	return m
}

func same(t *testing.T, what string, got []byte, v any) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n got  %s\n want %s", what, got, want)
	}
}

// TestAppendMatchesEncodingJSON: the hand-written encoders write exactly what encoding/json
// writes for the same values.
func TestAppendMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		s := randString(r)
		same(t, "string "+s, appendString(nil, s), s)
		h := Header{EventID: randString(r), Timestamp: r.Int64() - r.Int64()}
		res := ResultMsg{Header: h, Twin: randEntries(r)}
		same(t, "result", appendResultMsg(nil, res), res)
		doc := DocumentMsg{Header: h}
		if r.IntN(8) > 0 {
			doc.Twin = map[string]Doc{}
			for range r.IntN(4) {
				doc.Twin[randString(r)] = Doc{Last: randEntry(r), Current: randEntry(r)}
			}
		}
		same(t, "document", appendDocumentMsg(nil, doc), doc)
		var rep TwinReport
		if r.IntN(8) > 0 {
			rep.Twins = []StatusTwin{}
			for range r.IntN(4) {
				st := StatusTwin{PropertyName: randString(r)}
				for _, side := range []**StatusValue{&st.Reported, &st.ObservedDesired} {
					if r.IntN(3) > 0 {
						v := &StatusValue{Value: randString(r)}
						if r.IntN(3) > 0 {
							v.Metadata = map[string]string{}
							for range r.IntN(3) {
								v.Metadata[randString(r)] = randString(r)
							}
						}
						*side = v
					}
				}
				rep.Twins = append(rep.Twins, st)
			}
		}
		same(t, "report", appendTwinReport(nil, rep), rep)
		var tw Twin
		if r.IntN(4) > 0 {
			tw.Props = map[string]Property{}
			for range r.IntN(4) {
				p := Property{Optional: r.IntN(2) == 0, Type: randString(r),
					ExpectedVersion: Version{Cloud: r.Uint64()}, ActualVersion: Version{Edge: r.Uint64N(9)}}
				if r.IntN(2) == 0 {
					p.Expected = &Value{Value: randString(r), Timestamp: r.Int64N(3)}
				}
				if r.IntN(2) == 0 {
					p.Actual = &Value{Value: randString(r), Timestamp: r.Int64()}
				}
				tw.Props[randString(r)] = p
			}
		}
		tw.DesiredVersion = Version{Cloud: r.Uint64N(5), Edge: r.Uint64N(5)}
		if r.IntN(3) == 0 {
			tw.ActualFloors = map[string]int64{}
			for range 1 + r.IntN(3) {
				tw.ActualFloors[randString(r)] = r.Int64()
			}
		}
		same(t, "twin", tw.AppendJSON(nil), tw)
		st := DeviceState{State: []string{"", "online", randString(r)}[r.IntN(3)], LastOnline: []string{"", randString(r)}[r.IntN(2)]}
		same(t, "state", st.AppendJSON(nil), st)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "<\u2028>", "\xff\xfe", "\x00\b\f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		want, _ := json.Marshal(s)
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s want %s", s, got, want)
		}
		if !utf8.Valid(got) {
			t.Fatal("invalid UTF-8 out")
		}
	})
}

// TestEncodersFromState: the encoders that write straight from the state types write what the
// wire types they stand for encode to (encoding/json), on random twins, updates and changes.
func TestEncodersFromState(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	names := []string{"a", "b", "temp", "z9", "x-1", "é", "<&>"}
	randProp := func() Property {
		p := Property{Optional: r.IntN(2) == 0, Type: []string{"", "int", randString(r)}[r.IntN(3)],
			ExpectedVersion: Version{Cloud: r.Uint64N(9)}, ActualVersion: Version{Edge: r.Uint64N(9)}}
		if r.IntN(2) == 0 {
			p.Expected = &Value{Value: randString(r), Timestamp: r.Int64N(3) * 1700000000000}
		}
		if r.IntN(3) > 0 {
			p.Actual = &Value{Value: randString(r), Timestamp: r.Int64N(3) * 1700000000001}
		}
		return p
	}
	for range 5000 {
		tw := Twin{Props: map[string]Property{}}
		upd := Update{EventID: randString(r), Twin: map[string]*Report{}}
		var changes []Change
		for _, n := range names {
			if r.IntN(3) == 0 {
				continue
			}
			tw.Props[n] = randProp()
			switch r.IntN(4) {
			case 0:
				upd.Twin[n] = nil
			case 1:
				v := randString(r)
				upd.Twin[n] = &Report{Expected: &v}
			default:
				v := randString(r)
				upd.Twin[n] = &Report{Actual: &v}
			}
			c := Change{Name: n}
			if r.IntN(3) > 0 {
				p := randProp()
				c.Last = &p
			}
			if r.IntN(3) > 0 {
				p := randProp()
				c.Current = &p
			}
			changes = append(changes, c)
		}
		if r.IntN(10) == 0 {
			tw.Props = nil
		}
		now := r.Int64N(1 << 42)

		echo := map[string]*Entry{}
		for name, rep := range upd.Twin {
			switch {
			case rep == nil:
				echo[name] = nil
			case rep.Actual != nil:
				if p, ok := tw.Props[name]; ok && p.Actual != nil {
					e := toEntry(p, false)
					e.Expected = nil
					echo[name] = e
				}
			}
		}
		same(t, "result", EncodeResult(upd, tw, now), ResultMsg{Header: Header{upd.EventID, now}, Twin: echo})
		same(t, "document", EncodeDocument(upd.EventID, changes, now), DocumentMsg{Header: Header{upd.EventID, now}, Twin: Document(changes)})
		same(t, "report", EncodeTwinReport(tw, ""), TwinReport{Twins: Reported(tw)})
		same(t, "report with a uid", EncodeTwinReport(tw, "a\"uid"), TwinReport{Twins: Reported(tw), UID: "a\"uid"})
		slices.Reverse(changes) // unsorted: the general route
		same(t, "document, unsorted", EncodeDocument(upd.EventID, changes, now), DocumentMsg{Header: Header{upd.EventID, now}, Twin: Document(changes)})
	}
}
