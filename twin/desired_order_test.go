package twin

import "testing"

// TestObservedDesiredFollowsTheRevision: the edge orders desired values by the Device's
// revision and stamps expected with the Device's desired.metadata.timestamp (or its clock when
// there is none), which need not grow with the revision. A newer desired with an older
// timestamp (a manifest's fixed one) is applied at the edge, and the cloud's status must show
// it: it used to keep the older value, merging by timestamp.
func TestObservedDesiredFollowsTheRevision(t *testing.T) {
	const edgeNow = 1_700_000_000_000
	// Revision 10: desired 20 without a timestamp: stamped with the edge's clock.
	t1, _, err := ApplyDesired(Twin{}, Desired{Version: Version{Cloud: 10},
		Props: map[string]DesiredValue{"temp": {Value: "20", Type: "INT"}}}, edgeNow)
	if err != nil {
		t.Fatal(err)
	}
	cloud := MergeSnapshot(nil, Reported(t1))
	// Revision 11: the user applies a manifest with desired 30 and a fixed metadata timestamp
	// (as KubeEdge's examples carry), older than the edge's clock.
	t2, changed, err := ApplyDesired(t1, Desired{Version: Version{Cloud: 11},
		Props: map[string]DesiredValue{"temp": {Value: "30", Type: "INT", Timestamp: 1_550_049_403_598}}}, edgeNow+1000)
	if err != nil || len(changed) != 1 {
		t.Fatal(err, changed)
	}
	if got := t2.Props["temp"].Expected.Value; got != "30" {
		t.Fatalf("edge expected %s", got)
	}
	cloud = MergeSnapshot(cloud, Reported(t2))
	if got := cloud[0].ObservedDesired.Value; got != "30" {
		t.Fatalf("cloud status observedDesired is %q after the edge applied 30 (newer revision)", got)
	}
}
