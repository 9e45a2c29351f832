package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// ErrGuestRebooted fails the requests that were in flight when the guest agent said hello
// again (the guest rebooted or lost power).
var ErrGuestRebooted = errors.New("the guest rebooted")

// Agent is the host end of the guest agent's virtio-serial port.
type Agent struct {
	conn net.Conn
	enc  *json.Encoder

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan agentproto.Response
	closed  error
	hellos  chan *agentproto.BootInfo
}

func newAgent(conn net.Conn) *Agent {
	a := &Agent{conn: conn, enc: json.NewEncoder(conn), pending: map[uint64]chan agentproto.Response{},
		hellos: make(chan *agentproto.BootInfo, 4)}
	go a.read()
	return a
}

func (a *Agent) read() {
	r := bufio.NewReaderSize(a.conn, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			a.fail(fmt.Errorf("the guest agent's port closed: %w", err), true)
			return
		}
		var resp agentproto.Response
		if json.Unmarshal(line, &resp) != nil {
			continue // boot noise before the agent opened the port
		}
		if resp.Op == agentproto.OpHello && resp.ID == 0 {
			a.fail(ErrGuestRebooted, false)
			a.hellos <- resp.Boot
			continue
		}
		a.mu.Lock()
		ch, ok := a.pending[resp.ID]
		delete(a.pending, resp.ID)
		a.mu.Unlock()
		if ok {
			ch <- resp
		}
	}
}

// fail answers every pending request with err; permanent marks the agent unusable.
func (a *Agent) fail(err error, permanent bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, ch := range a.pending {
		ch <- agentproto.Response{ID: id, Error: err.Error()}
		delete(a.pending, id)
	}
	if permanent {
		a.closed = err
	}
}

// Hello waits for the agent's next hello (one per guest boot).
func (a *Agent) Hello(ctx context.Context) (*agentproto.BootInfo, error) {
	select {
	case b := <-a.hellos:
		return b, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("the guest agent did not say hello: %w", ctx.Err())
	}
}

// Do sends one request and waits for its answer. A Response with Error set is returned as is
// (with a nil error); err is only about the transport.
func (a *Agent) Do(ctx context.Context, req agentproto.Request) (agentproto.Response, error) {
	a.mu.Lock()
	if a.closed != nil {
		a.mu.Unlock()
		return agentproto.Response{}, a.closed
	}
	a.nextID++
	req.ID = a.nextID
	ch := make(chan agentproto.Response, 1)
	a.pending[req.ID] = ch
	err := a.enc.Encode(req)
	a.mu.Unlock()
	if err != nil {
		return agentproto.Response{}, fmt.Errorf("cannot send %s to the guest agent: %w", req.Op, err)
	}
	// A request the guest never answers (the agent wedged, the port lost a line) fails after
	// its own timeout and a margin, rather than hanging the suite until go test's timeout.
	bound := noAnswerBound
	if req.TimeoutMS > 0 {
		bound = time.Duration(req.TimeoutMS)*time.Millisecond + noAnswerMargin
	}
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case resp := <-ch:
		if resp.Error == ErrGuestRebooted.Error() {
			return resp, ErrGuestRebooted
		}
		return resp, nil
	case <-ctx.Done():
		a.forget(req.ID)
		return agentproto.Response{}, fmt.Errorf("guest agent %s: %w", req.Op, ctx.Err())
	case <-timer.C:
		a.forget(req.ID)
		return agentproto.Response{}, fmt.Errorf("guest agent %s: no answer within %v", req.Op, bound)
	}
}

// noAnswerBound bounds the wait for requests without a timeout of their own (a manifest of a
// large tree under TCG takes minutes); noAnswerMargin is added to a request's own timeout.
const (
	noAnswerBound  = 10 * time.Minute
	noAnswerMargin = time.Minute
)

// forget drops the pending request id (its answer, should it come, is discarded).
func (a *Agent) forget(id uint64) {
	a.mu.Lock()
	delete(a.pending, id)
	a.mu.Unlock()
}

// clockOffset measures guest clock minus host clock with one round trip.
func (a *Agent) clockOffset(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	resp, err := a.Do(ctx, agentproto.Request{Op: agentproto.OpNow})
	t1 := time.Now()
	if err != nil {
		return 0, err
	}
	mid := t0.Add(t1.Sub(t0) / 2)
	return time.Unix(0, resp.Time).Sub(mid), nil
}
