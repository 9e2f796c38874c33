/* Drover error codes.
 *
 * Every fallible function in Drover returns int: 0 on success or one of the negative codes below.
 * dr_strerror() turns a code into a short English sentence for logs and error replies.
 */
#ifndef DR_ERR_H
#define DR_ERR_H

#define DR_ERR_LEN 256 /* size of the char err[] buffers filled by setup code */

enum {
    DR_OK = 0,
    DR_EINVAL = -1,    /* an argument or an input value is malformed */
    DR_ENOMEM = -2,    /* allocation failed (only where aborting is not acceptable) */
    DR_EIO = -3,       /* a file or socket operation failed */
    DR_ECONFIG = -4,   /* the configuration is invalid */
    DR_EREDIS = -5,    /* Redis answered with an error */
    DR_EUNAVAIL = -6,  /* a backing service (Redis, NATS, broker) is unreachable */
    DR_ETIMEDOUT = -7, /* an operation did not complete in time */
    DR_ENOTFOUND = -8, /* the referenced object does not exist */
    DR_ECLOSED = -9,   /* the object is shutting down; the operation was not started */
    DR_EFENCED = -10,  /* a shard lease was lost: a newer owner holds it */
    DR_ETOOBIG = -11,  /* an input exceeds a configured limit */
    DR_EBUSY = -12,    /* a bounded queue is full; the caller takes the slow path */
};

/* Returns a static description of code; never NULL, also for unknown codes. */
const char *dr_strerror(int code);

#endif
