/*
 * forkchild is a PKCS#11 application written in C for the interop tests (pkcs11suite_test.go).
 * It loads a module (p11-kit-client.so) with dlopen and prints one line per step, "WHO WHAT
 * VALUE", for the Go test to compare.
 *
 *   forkchild MODULE PIN fork    logs in and signs, then forks. The child must get
 *                                CKR_CRYPTOKI_NOT_INITIALIZED until its own C_Initialize, must
 *                                then not be logged in, and can log in itself; the parent must
 *                                still be logged in after the child exits (PKCS #11 §5.1,
 *                                "Applications and processes").
 *   forkchild MODULE PIN events  serves commands read from stdin, one answer line each:
 *                                "wait" C_WaitForSlotEvent(CKF_DONT_BLOCK), "slots"
 *                                C_GetSlotList(CK_TRUE), "quit". Go's miekg/pkcs11 drops the
 *                                return value of C_WaitForSlotEvent, and slot 0 is a real slot.
 *
 * An alarm bounds every process: a hang ends it with SIGALRM instead of stalling the test.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR p11;

static void say(const char *who, const char *what, unsigned long value)
{
	printf("%s %s 0x%lx\n", who, what, value);
	fflush(stdout);
}

static CK_RV initialize(void)
{
	CK_C_INITIALIZE_ARGS args;

	memset(&args, 0, sizeof args);
	args.flags = CKF_OS_LOCKING_OK; /* p11-kit-client.so refuses to run without it */
	return p11->C_Initialize(&args);
}

/* first_slot finds the first slot with a token. */
static CK_RV first_slot(CK_SLOT_ID *slot)
{
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	CK_RV rv = p11->C_GetSlotList(CK_TRUE, slots, &n);

	if (rv == CKR_OK && n == 0)
		rv = CKR_TOKEN_NOT_PRESENT;
	if (rv == CKR_OK)
		*slot = slots[0];
	return rv;
}

/* find returns the first object of a class, with CKA_ID id when id is not NULL. */
static CK_RV find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const CK_BYTE *id, CK_OBJECT_HANDLE *obj, CK_ULONG *count)
{
	CK_ATTRIBUTE tmpl[2] = {
		{CKA_CLASS, &cls, sizeof cls},
		{CKA_ID, (void *)id, 1},
	};
	CK_OBJECT_HANDLE objs[32];
	CK_ULONG n = 0;
	CK_RV rv = p11->C_FindObjectsInit(s, tmpl, id ? 2 : 1);

	if (rv != CKR_OK)
		return rv;
	rv = p11->C_FindObjects(s, objs, 32, &n);
	p11->C_FindObjectsFinal(s);
	if (rv == CKR_OK && obj && n > 0)
		*obj = objs[0];
	if (count)
		*count = n;
	return rv;
}

/* report prints the session's state and how many private keys the application sees. */
static void report(const char *who, CK_SESSION_HANDLE s)
{
	CK_SESSION_INFO info;
	CK_ULONG n = 0;
	CK_RV rv = p11->C_GetSessionInfo(s, &info);

	if (rv != CKR_OK) {
		say(who, "C_GetSessionInfo", rv);
		return;
	}
	say(who, "state", info.state);
	rv = find(s, CKO_PRIVATE_KEY, NULL, NULL, &n);
	if (rv != CKR_OK) {
		say(who, "C_FindObjects", rv);
		return;
	}
	say(who, "private-keys", n);
}

/* sign signs a digest with the private key of CKA_ID 01 (PIN once) and prints the result. */
static void sign(const char *who, CK_SESSION_HANDLE s)
{
	static const CK_BYTE id = 1;
	CK_BYTE digest[32], sig[256];
	CK_ULONG len = sizeof sig;
	CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
	CK_RV rv = find(s, CKO_PRIVATE_KEY, &id, &key, NULL);

	memset(digest, 0x5a, sizeof digest);
	if (rv == CKR_OK && key == CK_INVALID_HANDLE)
		rv = CKR_KEY_HANDLE_INVALID;
	if (rv == CKR_OK)
		rv = p11->C_SignInit(s, &mech, key);
	if (rv == CKR_OK)
		rv = p11->C_Sign(s, digest, sizeof digest, sig, &len);
	say(who, "C_Sign", rv);
}

static int run_fork(const char *pin)
{
	CK_SLOT_ID slot = 0, child_slot = 0;
	CK_SESSION_HANDLE s = 0, cs = 0;
	CK_ULONG n = 0;
	CK_RV rv;
	int status;
	pid_t pid;

	say("parent", "C_Initialize", initialize());
	rv = first_slot(&slot);
	if (rv != CKR_OK) {
		say("parent", "C_GetSlotList", rv);
		return 1;
	}
	rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK) {
		say("parent", "C_OpenSession", rv);
		return 1;
	}
	say("parent", "C_Login", p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)));
	report("parent", s);
	sign("parent", s);

	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		alarm(30);
		/* Until its own C_Initialize the child may not use the parent's library state. */
		say("child", "C_GetSlotList", p11->C_GetSlotList(CK_FALSE, NULL, &n));
		say("child", "C_GetSessionInfo", p11->C_GetSessionInfo(s, &(CK_SESSION_INFO){0}));
		say("child", "C_OpenSession", p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &cs));
		say("child", "C_Initialize", initialize());
		rv = first_slot(&child_slot);
		if (rv == CKR_OK)
			rv = p11->C_OpenSession(child_slot, CKF_SERIAL_SESSION, NULL, NULL, &cs);
		if (rv != CKR_OK) {
			say("child", "C_OpenSession", rv);
			exit(1);
		}
		/* "Even if P is already logged in", the child is not. */
		report("child", cs);
		say("child", "C_Login", p11->C_Login(cs, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)));
		report("child", cs);
		sign("child", cs);
		say("child", "C_Finalize", p11->C_Finalize(NULL));
		exit(0);
	}
	if (waitpid(pid, &status, 0) < 0) {
		perror("waitpid");
		return 1;
	}
	say("parent", "child-exit", WIFEXITED(status) ? (unsigned long)WEXITSTATUS(status) : 0x100UL + WTERMSIG(status));
	report("parent", s);
	sign("parent", s);
	say("parent", "C_Finalize", p11->C_Finalize(NULL));
	return 0;
}

static int run_events(void)
{
	char line[64];

	say("events", "C_Initialize", initialize());
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (strcmp(line, "wait") == 0) {
			CK_SLOT_ID slot = (CK_SLOT_ID)-1; /* left as is when there is no event */
			CK_RV rv = p11->C_WaitForSlotEvent(CKF_DONT_BLOCK, &slot, NULL);

			printf("wait 0x%lx %ld\n", rv, slot == (CK_SLOT_ID)-1 ? -1L : (long)slot);
		} else if (strcmp(line, "slots") == 0) {
			CK_ULONG n = 0;
			CK_RV rv = p11->C_GetSlotList(CK_TRUE, NULL, &n);

			printf("slots 0x%lx %lu\n", rv, n);
		} else if (strcmp(line, "quit") == 0) {
			say("events", "C_Finalize", p11->C_Finalize(NULL));
			return 0;
		} else {
			printf("unknown %s\n", line);
		}
		fflush(stdout);
	}
	return 1;
}

int main(int argc, char **argv)
{
	CK_C_GetFunctionList get;
	void *lib;

	if (argc != 4) {
		fprintf(stderr, "usage: forkchild MODULE PIN fork|events\n");
		return 2;
	}
	alarm(60);
	lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "%s\n", dlerror());
		return 2;
	}
	get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (!get || get(&p11) != CKR_OK) {
		fprintf(stderr, "%s: no C_GetFunctionList\n", argv[1]);
		return 2;
	}
	if (strcmp(argv[3], "fork") == 0)
		return run_fork(argv[2]);
	if (strcmp(argv[3], "events") == 0)
		return run_events();
	fprintf(stderr, "forkchild: %s is not a mode (fork, events)\n", argv[3]);
	return 2;
}
