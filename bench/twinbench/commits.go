package twinbench

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
)

// slowCommit is the commit time above which a commit counts as slow: a twin update waiting on
// it already misses the 10 ms goal five times over. It is a bucket bound of the edge's commit
// histograms.
const slowCommit = 0.0512

// commitHist is the edge store's commit histograms as read from its metrics: cumulative counts
// by bucket upper bound, in increasing order, for whole commits and for their disk part (page
// writes and fdatasyncs).
type commitHist struct {
	le          []float64
	whole, disk []float64
}

var bucketLine = regexp.MustCompile(`(?m)^tether_edge_store_commit(_disk)?_seconds_bucket\{le="([^"]+)"\} ([0-9.e+-]+)$`)

// commits reads the edge store's commit histograms.
func (r *rig) commits() (commitHist, error) {
	resp, err := http.Get(r.meta + "/metrics")
	if err != nil {
		return commitHist{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return commitHist{}, err
	}
	var h commitHist
	for _, m := range bucketLine.FindAllStringSubmatch(string(body), -1) {
		le, err1 := strconv.ParseFloat(m[2], 64) // +Inf too
		n, err2 := strconv.ParseFloat(m[3], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if m[1] == "" {
			h.le, h.whole = append(h.le, le), append(h.whole, n)
		} else {
			h.disk = append(h.disk, n)
		}
	}
	if len(h.le) == 0 || len(h.disk) != len(h.le) {
		return commitHist{}, fmt.Errorf("the edge's metrics have no commit histograms")
	}
	return h, nil
}

// since is the commits between an earlier reading and this one.
func (h commitHist) since(before commitHist) commitHist {
	if len(before.le) != len(h.le) {
		return h
	}
	d := commitHist{le: h.le, whole: make([]float64, len(h.le)), disk: make([]float64, len(h.le))}
	for i := range h.le {
		d.whole[i], d.disk[i] = h.whole[i]-before.whole[i], h.disk[i]-before.disk[i]
	}
	return d
}

// String says how many commits there were, how many were slower than slowCommit whole and in
// their disk part alone, and the bound of the slowest one's bucket.
func (h commitHist) String() string {
	if len(h.le) == 0 {
		return "commits not read"
	}
	all := h.whole[len(h.le)-1]
	var slow, slowDisk, slowest float64
	for i, le := range h.le {
		if le == slowCommit {
			slow, slowDisk = all-h.whole[i], h.disk[len(h.le)-1]-h.disk[i]
		}
		if i > 0 && h.whole[i] > h.whole[i-1] {
			slowest = le
		}
	}
	if slow == 0 {
		return fmt.Sprintf("%.0f commits, none over %.0f ms", all, slowCommit*1000)
	}
	return fmt.Sprintf("%.0f commits, %.0f over %.0f ms (%.0f of them in their page writes and fdatasyncs alone), the slowest under %.0f ms",
		all, slow, slowCommit*1000, slowDisk, slowest*1000)
}
