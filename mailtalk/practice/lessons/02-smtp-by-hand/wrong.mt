# Lesson 2 not done: the message is never ended with its lone dot before QUIT, so
# nothing is delivered (the server takes "QUIT" as a line of the message).
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: 250
C: DATA
S: 354
C: Subject: hello
C:
C: Hi Bob.
C: QUIT
