package protocol

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// golden pins the encoding of every message type. A change here is a wire-format change: bump
// Version and keep decoding the old form, do not just update the bytes.
var golden = []struct {
	name string
	msg  Message
	hex  string
}{
	{"hello", &Hello{Version: 1, Node: "edge-1", ClusterID: "c1", Cursor: 300, Agent: "v0.1.0"},
		"01" + "14" + "01" + "06656467652d31" + "026331" + "ac02" + "0676302e312e30"},
	{"welcome", &Welcome{Version: 1, ClusterID: "c1", Head: 301, Mode: ModeIncremental, HeartbeatMS: 15000},
		"02" + "09" + "01" + "026331" + "ad02" + "01" + "9875"},
	{"upsert", &Upsert{Seq: 7, Rev: 300, Key: Key{"pods", "default", "web"}, Object: []byte(`{"a":1}`)},
		"03" + "1c" + "07" + "ac02" + "04706f6473" + "0764656661756c74" + "03776562" + "077b2261223a317d"},
	{"delete", &Delete{Seq: 8, Rev: 301, Key: Key{"nodes", "", "edge-1"}},
		"04" + "11" + "08" + "ad02" + "056e6f646573" + "00" + "06656467652d31"},
	{"progress", &Progress{Seq: 9, Through: 302}, "05" + "03" + "09" + "ae02"},
	{"reset-begin", &ResetBegin{Seq: 1}, "06" + "01" + "01"},
	{"reset-end", &ResetEnd{Seq: 2, Through: 5}, "07" + "02" + "02" + "05"},
	{"ack", &Ack{Seq: 200}, "08" + "02" + "c801"},
	{"report", &Report{Seq: 3, Kind: ReportTwin, Subject: "ns/d", Time: -1, Payload: []byte("{}")},
		"09" + "0b" + "03" + "02" + "046e732f64" + "01" + "027b7d"},
	{"report-ack", &ReportAck{Seq: 3}, "0a" + "01" + "03"},
	{"error", &Error{Code: CodeTooSlow, Message: "slow"}, "0b" + "06" + "07" + "04736c6f77"},
	{"renew", &Renew{CSR: []byte("PEM")}, "0c" + "04" + "0350454d"},
	{"renewed", &Renewed{Certificate: []byte("PEM"), Message: ""}, "0d" + "05" + "0350454d" + "00"},
	{"request", &Request{ID: 1, Method: "PUT", Path: "/p", ContentType: "a/j", Body: []byte("{}")},
		"0e" + "0f" + "01" + "03505554" + "022f70" + "03612f6a" + "027b7d"},
	{"response", &Response{ID: 1, Code: 200, ContentType: "a/j", Body: []byte("{}")},
		"0f" + "0a" + "01" + "c801" + "03612f6a" + "027b7d"},
}

func TestGolden(t *testing.T) {
	for _, g := range golden {
		t.Run(g.name, func(t *testing.T) {
			got := hex.EncodeToString(Encode(g.msg))
			if got != g.hex {
				t.Fatalf("encoding changed\n got %s\nwant %s", got, g.hex)
			}
			raw, _ := hex.DecodeString(g.hex)
			msgs, err := Decode(raw)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(msgs) != 1 || !reflect.DeepEqual(msgs[0], g.msg) {
				t.Fatalf("decode = %#v, want %#v", msgs, g.msg)
			}
		})
	}
}

func TestFrameOfMany(t *testing.T) {
	var in []Message
	for _, g := range golden {
		in = append(in, g.msg)
	}
	out, err := Decode(Encode(in...))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip differs:\n in %#v\nout %#v", in, out)
	}
}

// TestMessagesPerFrameBounded: a frame of tiny messages within the size limit decodes into at
// most MaxFrameMessages; one more is refused. Before, 4 MiB of 3-byte Acks decoded into 1.4
// million messages and about 200 MiB.
func TestMessagesPerFrameBounded(t *testing.T) {
	var frame []byte
	for range MaxFrameMessages {
		frame = Append(frame, &Ack{Seq: 1})
	}
	if msgs, err := Decode(frame); err != nil || len(msgs) != MaxFrameMessages {
		t.Fatalf("a frame of %d messages: %d decoded, %v", MaxFrameMessages, len(msgs), err)
	}
	frame = Append(frame, &Ack{Seq: 1})
	if _, err := Decode(frame); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a frame of %d messages: %v", MaxFrameMessages+1, err)
	}
}

func TestLargeBodyLength(t *testing.T) {
	// Bodies past 127 bytes need a multi-byte length; Append reserves the worst case and closes
	// the gap, so check the gap is closed correctly for several sizes.
	for _, n := range []int{0, 1, 126, 127, 128, 16383, 16384, 1 << 20} {
		obj := bytes.Repeat([]byte("x"), n)
		m := &Upsert{Seq: 1, Rev: 2, Key: Key{"configmaps", "ns", "big"}, Object: obj}
		out, err := Decode(Encode(m, &Ack{Seq: 5}))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if got := out[0].(*Upsert); !bytes.Equal(got.Object, obj) || out[1].(*Ack).Seq != 5 {
			t.Fatalf("n=%d: wrong round trip", n)
		}
	}
}

func TestMalformed(t *testing.T) {
	cases := map[string]string{
		"empty":              "",
		"unknown type":       "6301" + "00",
		"body overruns":      "0805" + "01",
		"truncated varint":   "0801" + "80",
		"trailing in body":   "0802" + "0101",
		"string overruns":    "040a" + "0101" + "ff01",
		"bad mode":           "020601" + "00" + "01" + "09" + "00" + "00",
		"name over bound":    "04" + "ff03" + "0101" + "00" + "00" + "ff03" + strings.Repeat("61", 255),
		"error code too big": "0b04" + "ffff0f" + "00",
		"truncated type":     "",
		"length only":        "01",
	}
	for name, h := range cases {
		raw, err := hex.DecodeString(h)
		if err != nil {
			t.Fatalf("%s: bad test hex: %v", name, err)
		}
		if _, err := Decode(raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode(%s) error = %v, want ErrMalformed", name, h, err)
		}
	}
}

func TestDecodeDoesNotTrustLengths(t *testing.T) {
	// A body claiming 2^62 bytes must fail on the bound, not try to slice or allocate it.
	frame := append([]byte{byte(TypeUpsert)}, appendUvarint(nil, 1<<62)...)
	if _, err := Decode(frame); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
}

func TestSeqOf(t *testing.T) {
	for _, g := range golden {
		_, isData := SeqOf(g.msg)
		want := map[Type]bool{TypeUpsert: true, TypeDelete: true, TypeProgress: true, TypeResetBegin: true, TypeResetEnd: true}[g.msg.Type()]
		if isData != want {
			t.Errorf("SeqOf(%s) data = %v, want %v", g.msg.Type(), isData, want)
		}
	}
}
