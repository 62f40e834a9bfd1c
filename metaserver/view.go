package metaserver

import (
	iradix "github.com/hashicorp/go-immutable-radix"

	"github.com/tetherhub/tether/edgestore"
)

// view is the edge store's current objects at one local revision, kept in memory from the
// store's change feed so that lists, gets and the first events of a watch cost neither a bbolt
// read nor decoding every record (which is most of a 1,000-object list's time). The tree is
// immutable: a reader keeps the view it took for as long as it likes while changes publish
// new ones. The records are the store's, shared and never modified.
type view struct {
	tree *iradix.Tree // store key → *edgestore.Record
	rev  int64        // the local revision the view is complete through
}

func loadView(st *edgestore.Store) (*view, error) {
	recs, rev, err := st.List("/")
	if err != nil {
		return nil, err
	}
	txn := iradix.New().Txn()
	for _, r := range recs {
		txn.Insert([]byte(r.StoreKey), r)
	}
	return &view{tree: txn.Commit(), rev: int64(rev)}, nil
}

// apply returns the view after changes, which come in revision order.
func (v *view) apply(changes []edgestore.Change) *view {
	txn := v.tree.Txn()
	rev := v.rev
	for _, c := range changes {
		if c.New != nil {
			txn.Insert([]byte(c.Key), c.New)
		} else {
			txn.Delete([]byte(c.Key))
		}
		rev = int64(c.Rev)
	}
	return &view{tree: txn.Commit(), rev: rev}
}

func (v *view) get(key string) *edgestore.Record {
	r, ok := v.tree.Get([]byte(key))
	if !ok {
		return nil
	}
	return r.(*edgestore.Record)
}

// each calls fn for the records under prefix in key order, until fn returns false.
func (v *view) each(prefix string, fn func(*edgestore.Record) bool) {
	v.tree.Root().WalkPrefix([]byte(prefix), func(_ []byte, r any) bool {
		return !fn(r.(*edgestore.Record))
	})
}
