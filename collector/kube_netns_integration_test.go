package collector

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The Kubernetes integration tests need endpoint and pod IPs that the API
// server accepts (it rejects loopback and link-local endpoint addresses) and
// on which the test's own servers listen. Rather than use an address of the
// machine's real interface, each such test runs again, as a child process, in
// a network namespace of its own: there lo is brought up and given
// kubeNetCIDR, so that every address of that range is local and bindable, and
// no packet of the test (etcd, kube-apiserver, node-exporter, the collector,
// the fake kubelets) can leave the namespace.
const (
	kubeNetnsEnv = "PANORAMA_KUBETEST_NETNS" // set to the test's name in the child
	kubeNetAddr  = "10.200.0.1"
	kubeNetMask  = "255.255.0.0" // 10.200.0.0/16
)

// inKubeNetns returns true in the child, with the namespace set up: the
// caller then runs the test body. In the parent it runs the test in the child,
// relays its output through t.Log, fails or skips t as the child did, and
// returns false with the child's whole output.
func inKubeNetns(t *testing.T) (inside bool, output string) {
	t.Helper()
	if os.Getenv(kubeNetnsEnv) == t.Name() {
		if err := setUpKubeNetns(); err != nil {
			t.Fatalf("network namespace: %v", err)
		}
		return true, ""
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.v=true", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	// A new network namespace needs CAP_SYS_ADMIN; without it, a new user
	// namespace (where the child is root) grants it.
	attrs := []*syscall.SysProcAttr{
		{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL},
		{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
			Pdeathsig:   syscall.SIGKILL,
		},
	}
	var lastErr error
	for _, attr := range attrs {
		cmd := exec.CommandContext(t.Context(), exe, args...)
		cmd.Env = append(os.Environ(), kubeNetnsEnv+"="+t.Name())
		cmd.SysProcAttr = attr
		cmd.WaitDelay = 10 * time.Second
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			pr.Close()
			pw.Close()
			lastErr = err
			if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) {
				continue
			}
			t.Fatalf("start %s in a network namespace: %v", t.Name(), err)
		}
		pw.Close()
		var (
			mu  sync.Mutex
			out strings.Builder
		)
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			sc := bufio.NewScanner(pr)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				mu.Lock()
				out.WriteString(line + "\n")
				mu.Unlock()
				t.Log("│ " + line)
			}
		}()
		err = cmd.Wait()
		<-copied
		pr.Close()
		output = out.String()
		if err == nil && strings.Contains(output, "--- SKIP: "+t.Name()+" ") {
			// The reason is the child's last log line before it skipped.
			reason := "see its output above"
			if m := regexp.MustCompile(`(?m)^\s+\S+\.go:\d+: (.*)$`).FindAllStringSubmatch(output[:strings.Index(output, "--- SKIP: ")], -1); len(m) > 0 {
				reason = m[len(m)-1][1]
			}
			t.Skipf("skipped in its network namespace: %s", reason)
		}
		if err != nil {
			t.Fatalf("%s failed in its network namespace: %v", t.Name(), err)
		}
		if !strings.Contains(output, "--- PASS: "+t.Name()+" ") {
			t.Fatalf("%s in its network namespace exited 0 without passing", t.Name())
		}
		return false, output
	}
	msg := fmt.Sprintf("cannot create a network namespace for the test: %v", lastErr)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return false, ""
}

// setUpKubeNetns brings lo up and adds kubeNetAddr with kubeNetMask to it
// (as the alias lo:1): on a loopback device the kernel makes the whole
// prefix local.
func setUpKubeNetns() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	lo, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, lo); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	lo.SetUint16(lo.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	alias, err := unix.NewIfreq("lo:1")
	if err != nil {
		return err
	}
	if err := alias.SetInet4Addr(net.ParseIP(kubeNetAddr).To4()); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, alias); err != nil {
		return fmt.Errorf("add %s to lo: %w", kubeNetAddr, err)
	}
	if err := alias.SetInet4Addr(net.ParseIP(kubeNetMask).To4()); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFNETMASK, alias); err != nil {
		return fmt.Errorf("set netmask %s: %w", kubeNetMask, err)
	}
	// Check: an address of the prefix other than kubeNetAddr is bindable.
	l, err := net.Listen("tcp", "10.200.255.254:0")
	if err != nil {
		return fmt.Errorf("10.200.0.0/16 is not local: %w", err)
	}
	return l.Close()
}
