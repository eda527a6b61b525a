package recovered

import (
	"errors"
	"strings"
	"testing"
)

func TestGoRecoversIntoAnError(t *testing.T) {
	got := make(chan error, 1)
	Go("the test goroutine", func(err error) { got <- err }, func() {
		var m map[string]int
		m["x"]++
	})
	err := <-got
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Where != "the test goroutine" ||
		!strings.Contains(err.Error(), "internal error (a bug in imgcast) in the test goroutine: assignment to entry in nil map") {
		t.Errorf("err = %v", err)
	}
}
