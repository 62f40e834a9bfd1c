package boltkeys

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// DeleteThrough deletes every key of b up to and including last, keys being big-endian
// uint64s, and returns how many it deleted.
//
// Each step seeks the key after the deleted one. Once an earlier write in the same transaction
// has loaded a leaf into memory, bbolt's Cursor.Delete shifts that leaf's entries under the
// cursor and Cursor.Next skips every other key: those keys would stay behind for good.
func DeleteThrough(b *bolt.Bucket, last uint64) (int, error) {
	c := b.Cursor()
	n := 0
	for k, _ := c.First(); k != nil; n++ {
		at := binary.BigEndian.Uint64(k)
		if at > last {
			break
		}
		if err := c.Delete(); err != nil {
			return n, err
		}
		var next [8]byte
		binary.BigEndian.PutUint64(next[:], at+1)
		k, _ = c.Seek(next[:])
	}
	return n, nil
}
