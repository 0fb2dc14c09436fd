package listing

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/peonify/peonify"
)

func TestPage(t *testing.T) {
	var all []peonify.TaskInfo
	for i := range 1000 {
		typ := "a"
		if i%3 == 0 {
			typ = "b"
		}
		key := ""
		if i%4 == 0 {
			key = "k"
		}
		all = append(all, peonify.TaskInfo{Task: peonify.Task{ID: fmt.Sprintf("%04d", i), Type: typ, Key: key}})
	}
	for _, opts := range []peonify.ListOptions{
		{Limit: 10},
		{Limit: 10, After: "0500"},
		{Limit: 7, Type: "b", After: "0100"},
		{Limit: 2000},
		{Limit: 5, After: "9999"},
		{Limit: 20, Key: "k", After: "0010"},
		{Limit: 20, Key: "k", Type: "b"},
		{Limit: 20, Key: "no-such-key"},
	} {
		var want []string
		for _, ti := range all {
			if ti.Task.ID > opts.After && (opts.Type == "" || ti.Task.Type == opts.Type) && (opts.Key == "" || ti.Task.Key == opts.Key) && len(want) < opts.Limit {
				want = append(want, ti.Task.ID)
			}
		}
		p := Infos(opts)
		for _, i := range rand.Perm(len(all)) {
			p.Add(all[i])
		}
		var got []string
		for _, ti := range p.Items() {
			got = append(got, ti.Task.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v: got %v, want %v", opts, got, want)
		}
		if p.Full() != (len(want) == opts.Limit) {
			t.Errorf("%+v: Full = %t with %d items", opts, p.Full(), len(want))
		}
	}
}
