package prompt

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// The fake pinentry is this test binary run again with these variables set.
const (
	fakeModeEnv       = "PROMPT_FAKE_PINENTRY"    // how to behave, see fakePinentry
	fakeReplyEnv      = "PROMPT_FAKE_REPLY"       // the lines answering GETPIN, "\n"-separated
	fakeTranscriptEnv = "PROMPT_FAKE_TRANSCRIPT"  // file the commands received are appended to
	fakePIDEnv        = "PROMPT_FAKE_PID_FILE"    // file the fake writes its process id to
	fakeGreetingEnv   = "PROMPT_FAKE_GREETING"    // the first line, "OK Pleased to meet you" if unset
	fakeStderrEnv     = "PROMPT_FAKE_STDERR_TEXT" // written to standard error before exiting early
)

// fakePinentry behaves like a pinentry, strictly: it checks every command line the way a real
// one would parse it and answers ERR to anything a pinentry would refuse. Modes:
//
//	serve           answer everything; GETPIN with PROMPT_FAKE_REPLY
//	hang-greeting   say nothing at all
//	hang-getpin     answer everything but GETPIN, which never gets an answer
//	hang-with-child start a hang-greeting child that shares its output (as a wrapper script
//	                would), then hang; the child writes its id to PROMPT_FAKE_PID_FILE.child
//	ignore-bye      like serve, then ignore BYE and the end of input
//	exit-early      write PROMPT_FAKE_STDERR_TEXT to standard error and exit 3 at once
//
// Before hanging it creates PROMPT_FAKE_PID_FILE.hung. It returns the exit code.
func fakePinentry(mode string) int {
	if f := os.Getenv(fakePIDEnv); f != "" {
		os.WriteFile(f, []byte(fmt.Sprint(os.Getpid())), 0o600)
	}
	out := bufio.NewWriter(os.Stdout)
	reply := func(lines ...string) {
		for _, l := range lines {
			out.WriteString(l + "\n")
		}
		out.Flush()
	}
	var transcript *os.File
	if f := os.Getenv(fakeTranscriptEnv); f != "" {
		var err error
		if transcript, err = os.OpenFile(f, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer transcript.Close()
	}

	hang := func() {
		if f := os.Getenv(fakePIDEnv); f != "" {
			os.WriteFile(f+".hung", nil, 0o600)
		}
		time.Sleep(time.Hour)
	}

	switch mode {
	case "hang-greeting":
		hang()
		return 0
	case "hang-with-child":
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), fakeModeEnv+"=hang-greeting", fakePIDEnv+"="+os.Getenv(fakePIDEnv)+".child")
		child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		hang()
		return 0
	case "exit-early":
		fmt.Fprint(os.Stderr, os.Getenv(fakeStderrEnv))
		return 3
	}
	greeting, ok := os.LookupEnv(fakeGreetingEnv)
	if !ok {
		greeting = "OK Pleased to meet you"
	}
	reply(greeting)

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 4096), 4096)
	seenDesc := false
	for in.Scan() {
		line := in.Text()
		if transcript != nil {
			fmt.Fprintln(transcript, line)
		}
		if len(line) > assuanLineMax || strings.ContainsAny(line, "\r\x00") {
			reply("ERR 536871183 Line too long or broken")
			continue
		}
		cmd, arg, _ := strings.Cut(line, " ")
		switch cmd {
		case "OPTION":
			if name, _, ok := strings.Cut(arg, "="); !ok || name == "" {
				reply("ERR 83886254 Unknown option")
				continue
			}
			reply("OK")
		case "SETTITLE", "SETPROMPT", "SETERROR", "SETDESC":
			if _, err := assuanUnescape(nil, []byte(arg)); err != nil {
				reply("ERR 536871187 Invalid value")
				continue
			}
			seenDesc = seenDesc || cmd == "SETDESC"
			reply("OK")
		case "GETPIN":
			if !seenDesc {
				reply("ERR 83886335 GETPIN without SETDESC")
				continue
			}
			if mode == "hang-getpin" {
				hang()
			}
			reply(strings.Split(os.Getenv(fakeReplyEnv), "\n")...)
		case "BYE":
			if mode == "ignore-bye" {
				time.Sleep(time.Hour)
			}
			reply("OK closing connection")
			return 0
		default:
			reply("ERR 536871187 Unknown IPC command")
		}
	}
	if mode == "ignore-bye" {
		time.Sleep(time.Hour)
	}
	return 0
}
