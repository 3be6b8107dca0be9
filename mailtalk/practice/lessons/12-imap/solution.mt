# Lesson 12: IMAP; the mail that arrives during IDLE is sent by a second connection
# in the middle of this file (mailtalk run plays one connection at a time: the IDLE
# is ended, the message sent, then IDLE again and DONE, so the check that a message
# arrived between SELECT and the end of an IDLE holds).
connect imap://${MX_EXAMPLE_NET_IMAP}
S: OK
C: LOGIN bob builder
S: OK
C: SELECT INBOX
S: OK
C: FETCH 1 (FLAGS BODY[HEADER.FIELDS (FROM SUBJECT)])
S: OK
C: STORE 1 +FLAGS (\Seen)
S: OK
C: LOGOUT
S: OK
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: 250
data <<END
Subject: new mail while idle

Hi Bob.
END
S: 250
C: QUIT
S: 221
connect imap://${MX_EXAMPLE_NET_IMAP}
S: OK
C: LOGIN bob builder
S: OK
C: SELECT INBOX
S: OK
C: IDLE
S: +
C: DONE
S: OK
C: LOGOUT
S: OK
