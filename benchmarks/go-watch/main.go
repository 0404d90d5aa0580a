// go-watch: watch delivery latency as a Go client on etcd's clientv3 (the
// stack kube-apiserver watches through) sees it. Watchers on one prefix,
// spread over connections (one gRPC stream per connection), one writer
// putting keys under the prefix at a fixed rate; for every event at every
// watcher, the delay from the put's reply (0 when the event came first)
// and from its send. Prints one JSON line.
//
// Built offline from Debian's golang-etcd-server-dev (benchmarks/go-watch/build.sh).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated endpoints")
	conns := flag.Int("conns", 10, "connections (one watch stream each)")
	watchers := flag.Int("watchers", 1000, "watchers in all")
	puts := flag.Int("puts", 400, "puts the writer makes")
	rate := flag.Float64("rate", 20, "puts per second")
	prefix := flag.String("prefix", "/registry/pods/", "the watched prefix")
	valSize := flag.Int("val-size", 256, "value size in bytes")
	flag.Parse()

	eps := strings.Split(*endpoints, ",")
	var sent, replied sync.Map // put number -> time.Time
	type sample struct{ fromReply, fromSend float64 }
	results := make(chan []sample, *watchers)
	ready := make(chan struct{}, *watchers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(float64(*puts) / *rate * float64(time.Second))+60*time.Second)
	defer cancel()
	var clients []*clientv3.Client
	for c := 0; c < *conns; c++ {
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 10 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer cli.Close()
		clients = append(clients, cli)
	}
	writerDone := make(chan struct{})
	var arrivals sync.WaitGroup
	for w := 0; w < *watchers; w++ {
		cli := clients[w%len(clients)]
		arrivals.Add(1)
		go func() {
			defer arrivals.Done()
			var got []struct {
				n  int
				at time.Time
			}
			wch := cli.Watch(clientv3.WithRequireLeader(ctx), *prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			for resp := range wch {
				if resp.Created {
					ready <- struct{}{}
					continue
				}
				now := time.Now()
				for _, e := range resp.Events {
					key := string(e.Kv.Key)
					n, _ := strconv.Atoi(key[strings.LastIndex(key, "-")+1:])
					got = append(got, struct {
						n  int
						at time.Time
					}{n, now})
				}
				if len(got) >= *puts {
					break
				}
			}
			<-writerDone // every reply time is known
			var out []sample
			for _, g := range got {
				s, ok1 := sent.Load(g.n)
				r, ok2 := replied.Load(g.n)
				if !ok1 || !ok2 {
					continue
				}
				fromReply := g.at.Sub(r.(time.Time)).Seconds() * 1000
				if fromReply < 0 {
					fromReply = 0
				}
				out = append(out, sample{fromReply, g.at.Sub(s.(time.Time)).Seconds() * 1000})
			}
			results <- out
		}()
	}
	for i := 0; i < *watchers; i++ {
		<-ready
	}
	value := strings.Repeat("v", *valSize)
	start := time.Now()
	for i := 0; i < *puts; i++ {
		due := start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
		time.Sleep(time.Until(due))
		sent.Store(i, time.Now())
		if _, err := clients[0].Put(ctx, fmt.Sprintf("%spod-%d", *prefix, i), value); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		replied.Store(i, time.Now())
	}
	close(writerDone)
	arrivals.Wait()
	var fromReply, fromSend []float64
	for i := 0; i < *watchers; i++ {
		for _, s := range <-results {
			fromReply = append(fromReply, s.fromReply)
			fromSend = append(fromSend, s.fromSend)
		}
	}
	sort.Float64s(fromReply)
	sort.Float64s(fromSend)
	report := map[string]interface{}{
		"watchers": *watchers, "conns": *conns, "puts": *puts, "events": len(fromReply),
		"missing":     *watchers**puts - len(fromReply),
		"fromReplyMs": map[string]float64{"p50": percentile(fromReply, 50), "p99": percentile(fromReply, 99), "max": percentile(fromReply, 100)},
		"fromSendMs":  map[string]float64{"p50": percentile(fromSend, 50), "p99": percentile(fromSend, 99), "max": percentile(fromSend, 100)},
	}
	b, _ := json.Marshal(report)
	fmt.Println(string(b))
}
