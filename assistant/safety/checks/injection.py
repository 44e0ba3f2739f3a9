"""Prompt injection and jailbreaks (OWASP LLM01), in the text and in every decoded view.

Hand-written patterns for the families attackers reuse: overriding earlier instructions,
asking for the system prompt, persona jailbreaks (DAN, developer mode), role-play framing meant
to lift the rules, "no restrictions" demands, and fake chat-template turns pasted into the
message. They run on the normalised text and on each decoded view (base64, hex, rot13, leet,
spaced letters), so "aWdub3JlIGFsbCBwcmV2aW91cyBpbnN0cnVjdGlvbnM=" is caught like the plain text.

Talking *about* injection ("what is prompt injection?", "how do I defend my bot against
'ignore previous instructions'?") is allowed: the override patterns need an imperative, not a
mention in a question about the technique.
"""

from __future__ import annotations

import logging
import re

from assistant.safety.verdict import Action, Category, Subject, Verdict

log = logging.getLogger(__name__)

_PRIOR = (r"(?:all\s+|any\s+|the\s+|your\s+|my\s+|every\s+|of\s+)*(?:(?:previous|prior|preceding|"
          r"above|earlier|former|original|initial|old|existing|current|given|system|safety|"
          r"developer|openai|default|preset|programmed|hidden|built-in)\s+)+"
          r"(?:instructions?|prompts?|rules|directives|guidelines|constraints|commands|"
          r"context|programming|guidance|orders|restrictions|policies|messages|text|settings|"
          r"directions|training|conditioning)")
_SYSTEM_PROMPT = (r"(?:system|initial|original|hidden|secret|internal|developer|pre-?)\s*"
                  r"(?:prompt|instructions?|message|directives|rules|configuration|context)")

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("override instructions",
         r"\b(?:ignore|disregard|forget|skip|override|bypass|drop|discard|abandon|neglect|"
         r"throw out|set aside|pay no attention to|do not follow|don'?t follow|stop following)"
         r"\s+(?:about\s+|everything\s+(?:in\s+)?)?" + _PRIOR),
        ("override instructions",
         r"\b(?:ignore|disregard|forget)\s+(?:everything|all|anything)\s+(?:you (?:were|have "
         r"been) told|(?:written |said |stated )?(?:above|before|previously|so far|earlier))"),
        ("override instructions",
         r"\b(?:new|updated|real|actual|true)\s+(?:instructions?|rules|system prompt|"
         r"directives?)\s*(?::|follow|are|override|supersede)"),
        ("override instructions",
         r"\b(?:your|the)\s+(?:previous|prior|old|original)\s+(?:instructions|rules|"
         r"programming)\s+(?:are|is|have been)\s+(?:void|cancell?ed|revoked|lifted|"
         r"obsolete|no longer|overridden|replaced)"),
        ("reveal system prompt",
         r"\b(?:reveal|print|show|display|repeat|output|dump|leak|tell me|give me|share|"
         r"recite|spell out|write out|copy|paste|expose|return|echo|list)\s+(?:me\s+)?"
         r"(?:\w+\s+){0,3}(?:your|the|its|this bot'?s?|the assistant'?s?)\s+(?:full\s+|"
         r"complete\s+|entire\s+|exact\s+|verbatim\s+|whole\s+)*" + _SYSTEM_PROMPT),
        ("reveal system prompt",
         r"\b(?:what (?:is|are|were)|what'?s)\s+(?:your|the)\s+(?:exact\s+|full\s+|"
         r"original\s+)*" + _SYSTEM_PROMPT + r"\b.{0,40}(?:verbatim|word for word|exactly|"
         r"in full)"),
        ("reveal system prompt",
         r"\b(?:repeat|print|output|copy|write)\s+(?:(?:all|everything|the (?:text|words|"
         r"lines?)|the conversation)\s+)?(?:above|before this|so far)\b.{0,60}"
         r"(?:verbatim|word for word|exactly|in a code ?block|including|starting with|"
         r"begin(?:ning)? with)"),
        ("persona jailbreak",
         r"\b(?:you are|you're|you will be|act as|pretend to be|become|roleplay as|"
         r"role-play as|play the role of|simulate|now in)"
         r"\s+(?:now\s+)?(?:a\s+|an\s+|the\s+|in\s+)?(?:dan\b|d\.a\.n|stan\b|dude\b|aim\b|"
         r"developer mode|dev mode|god mode|jailbr[eo]ak|jail-broken|unfiltered|uncensored|"
         r"unrestricted|unlocked|unbound|unchained|evil (?:ai|assistant|bot|twin|mode)|"
         r"an ai (?:with|without) no (?:rules|limits|restrictions|filters)|"
         r"(?:an? )?(?:ai|assistant|chatbot|model|llm) (?:that|who) (?:has no|ignores|"
         r"doesn'?t (?:have|follow)|isn'?t bound))"),
        ("persona jailbreak",
         r"\b(?:answer|respond|reply|act|speak|talk|write)\s+(?:only\s+)?as\s+(?:an?\s+|"
         r"the\s+|your\s+)?(?:unfiltered|uncensored|unrestricted|jailbroken|evil|amoral|"
         r"unaligned)\s+(?:ai|assistant|bot|model|version|self|twin)\b"
         r"|\b(?:enable|activate|enter|switch to|turn on)\s+developer mode\b.{0,40}\b(?:and|"
         r"then)\s+(?:answer|respond|reply|ignore|act|output|say)"),
        ("persona jailbreak",
         r"\b(?:do anything now|developer mode (?:enabled|output)|jailbreak mode|"
         r"dan mode|evil confidant|opposite mode|anti-?gpt|betterdan|unfiltered mode|"
         r"(?:enable|activate|enter|switch to) (?:dan|jailbreak|unfiltered|uncensored|"
         r"unrestricted|evil) mode|"
         r"\bsudo mode|god mode (?:enabled|on|activated)|maximum mode)\b"),
        ("lift restrictions",
         r"\b(?:respond|answer|reply|speak|talk|act|operate|write|continue|proceed|function)"
         r"\s+(?:\w+\s+){0,3}(?:without|free of|free from|with no|with zero|ignoring|beyond)"
         r"\s+(?:any\s+|all\s+|your\s+|the\s+)*(?:(?:ethical|moral|safety|content)\s+)?"
         r"(?:restrictions|limits|limitations|filters?|filtering|censorship|rules|"
         r"guidelines|guardrails|ethics|morals|boundaries|constraints|policies|refusals?)"),
        ("lift restrictions",
         r"\b(?:you (?:have|with) no|there are no|free (?:from|of) (?:all|any|your))\s+"
         r"(?:(?:ethical|moral|safety|content)\s+)?(?:restrictions|limits|filters|rules|"
         r"guidelines|guardrails|ethics|morals|boundaries|policies)\b(?!\s+(?:on|for|about|"
         r"regarding|around)\b)"),
        ("lift restrictions",
         r"\b(?:(?:you )?(?:can|must|will|should) never|don'?t|do not|never)\s+(?:refuse|"
         r"decline|say (?:no|you can'?t|i can'?t)|apologi[sz]e|add (?:warnings|disclaimers))"
         r"\b.{0,80}\b(?:anything|any request|any question|whatever|no matter)"),
        ("lift restrictions",
         r"\b(?:stay in character|never break character|don'?t break character)\b.{0,120}"
         r"\b(?:no (?:rules|limits|restrictions|filters)|anything|illegal|unethical|refuse)"
         r"|\b(?:no (?:rules|limits|restrictions|filters)|anything|illegal|unethical|refuse)"
         r"\b.{0,120}\b(?:stay in character|never break character|don'?t break character)\b"),
        ("role-play to lift rules",
         r"\b(?:pretend|imagine|let'?s say|suppose|hypothetically|in a (?:fictional|"
         r"hypothetical) (?:world|universe|scenario)|role-?play|act as if|play a game)\b.{0,80}"
         r"\b(?:you (?:have|had) no|without (?:any )?|no longer (?:have|bound)|not bound by|"
         r"free from|aren'?t bound by|don'?t have (?:any )?)\s*(?:\w+\s+)?(?:rules|restrictions|"
         r"filters|guidelines|limits|ethics|morals|policies|content polic\w+|programming)"),
        ("role-play to lift rules",
         r"\b(?:my (?:late |dead |deceased )?grand(?:ma|mother|pa|father)|bedtime story)\b"
         r".{0,120}\b(?:used to (?:tell|read|recite|say)|would (?:tell|read|recite))\b.{0,80}"
         r"\b(?:recipe|steps|how to|instructions|keys?|serial|napalm|meth|synthes)"),
        ("fake chat turn",
         r"<\|?(?:im_start|im_end|system|endoftext|begin_of_text|start_header_id|"
         r"end_header_id|eot_id)\|?>|\[/?inst\]|<</?sys>>|<\|(?:user|assistant)\|>"),
        ("fake chat turn",
         r"(?:^|\n|\s)(?:#{2,}\s*|\[|\*\*)?(?:system|sys|admin|developer|assistant)"
         r"\s*(?:\]|\*\*)?\s*(?:message|prompt|override|instruction|note|update)?\s*:"
         r"\s*(?:\w+\s+){0,6}(?:ignore|disregard|forget|override|you (?:are|must|will|may)|"
         r"new (?:rules|instructions)|the user is (?:authori[sz]ed|an admin|a developer|"
         r"verified)|safety (?:is )?(?:off|disabled)|restrictions (?:are )?(?:lifted|off|"
         r"removed)|(?:filters?|guardrails) (?:are )?(?:off|disabled))"),
        ("fake chat turn",
         r"\b(?:end of (?:user )?(?:input|message|prompt|conversation)|user input ends)\b.{0,40}"
         r"\b(?:system|new instructions?|admin)\b"),
        ("override instructions",  # the same in Spanish, French, German, Italian, Portuguese
         r"\b(?:ignora|ignorez|ignorier(?:e|en)?|olvida|oublie[zr]?|vergiss|vergessen sie|"
         r"dimentica|esqueca|desconsidera|descarta)\s+(?:\w+\s+){0,3}(?:instrucciones|"
         r"instructions|anweisungen|instruktionen|istruzioni|instrucoes|consignes|regeln|"
         r"reglas|regles|regole|regras|vorgaben)\b"
         r"|\bignorer?\s+(?:toutes\s+)?(?:les\s+)?(?:instructions|consignes|regles)\s+"
         r"(?:precedentes|anterieures|ci-dessus|du systeme)"),
        ("reveal system prompt",
         r"\b(?:prompt (?:de|du|di|do) (?:sistema|systeme)|system-?prompt|prompt systeme|"
         r"instrucciones (?:del|de) sistema|systemanweisungen|istruzioni di sistema)\b"
         r".{0,60}\b(?:muestra|muestrame|dime|revela|affiche|montre|revele|zeig|gib|nenne|"
         r"mostra|rivela|dimmi|mostre|completo|complet|vollstandig|integrale|verbatim)"
         r"|\b(?:muestra\w*|dime|revela|affiche\w*|montre\w*|revele\w*|zeig\w*|gib|nenne|"
         r"mostra\w*|rivela|dimmi|mostre)\s+(?:\w+\s+){0,3}(?:prompt (?:de|du|di|do) "
         r"(?:sistema|systeme)|system-?prompt|systemanweisungen|instrucciones (?:del|de) "
         r"sistema|istruzioni di sistema)"),
        ("persona jailbreak",
         r"\b(?:du bist|tu es|eres|sei|voce e|ahora eres|jetzt bist du|tu es maintenant)\b"
         r".{0,40}\b(?:ohne|sin|sans|senza|sem)\s+(?:\w+\s+)?(?:filter|filtro|filtros|"
         r"filtre|filtres|regeln|reglas|regles|regole|regras|einschrankungen|restricciones|"
         r"restrictions|restrizioni|restricoes|zensur|censura|censure|limites|grenzen)\b"),
        ("reveal system prompt",
         r"\b(?:instructions?|rules|prompt|directives|guidelines)\s+(?:that\s+)?you\s+"
         r"(?:were|have been|'ve been|got|received)\s+(?:given|told|provided|programmed)"
         r"(?:\s+\w+){0,6}?.{0,60}(?:copy|print|repeat|paste|verbatim|word for word|exact|"
         r"code ?block|in full|list them|show)"
         r"|\b(?:what|which)\s+(?:were|are)\s+(?:the\s+)?(?:exact\s+)?(?:instructions|"
         r"rules)\s+you\s+(?:were|have been)\s+(?:given|told)"
         r"|\b(?:what|which)\s+(?:exact\s+)?(?:instructions|rules|directives)\s+(?:were|have)"
         r"\s+you\s+(?:been\s+)?(?:given|told)"),
        ("persona jailbreak",
         r"\b(?:ai|assistant|bot|chatbot|model|llm|persona|character)\b\W+(?:\w+\W+){0,3}?"
         r"(?:with no|with zero|without any|without|free of|free from|that has no|who has no|"
         r"unbound by|not bound by)\s+(?:any\s+)?(?:(?:ethical|moral|safety|content)\s+)?"
         r"(?:guidelines|rules|restrictions|filters|limits|limitations|ethics|morals|censorship|policies|"
         r"guardrails|boundaries)\b"
         r"|\b(?:who|that|which) (?:never|won'?t ever|will never|can'?t) (?:says? no|refuses?|"
         r"declines?)(?: to)?(?: anything| any (?:request|question|prompt)s?)?\s*(?:[.,;!]|$)"),
        ("lift restrictions",
         r"\b(?:safety|content|ethical|ai|your|the ai'?s?|chatbot|assistant'?s?|model'?s?)\s+"
         r"(?:rules|restrictions|guidelines|"
         r"filters|guardrails|policies|limits)\s+(?:were|are|was|is|have been|has been)\s+"
         r"(?:just\s+|only\s+|now\s+|all\s+)?(?:a test|lifted|disabled|suspended|off|over|"
         r"removed|void|waived|abolished|repealed|gone|cancell?ed|no longer (?:apply|active|"
         r"in effect|needed|relevant))\b"
         r"|\b(?:answer|respond|reply|speak) (?:freely|without (?:holding back|censoring))"),
        ("disable safety",
         r"\b(?:safety|content|moderation|ethics|ethical|filter(?:ing)?)\s+(?:module|filters?|"
         r"system|mode|layer|guardrails?|protocols?|checks?|settings|subroutines?)\s+"
         r"(?:has been|have been|is|are|was|were)\s+(?:now\s+|just\s+|officially\s+)?"
         r"(?:disabled|turned off|removed|deactivated|bypassed|switched off|suspended|"
         r"uninstalled|offline)\b|\bsystem override\b"),
        ("indirect injection",
         r"\b(?:any|all|every|each)\s+(?:ai|assistant|llm|language model|bot|chatbot|agent|"
         r"model)s?\s+(?:reading|processing|summari[sz]ing|seeing|parsing|that reads|who reads|"
         r"that sees|that processes)\s+(?:this|these|the following)"
         r"|\b(?:note|message|instruction) (?:to|for) (?:the )?(?:ai|assistant|llm|language "
         r"model|chatbot)\s*:"),
        ("override instructions",
         r"\b(?:ignore|disregard|forget|bypass|override|break)\s+(?:all\s+)?your\s+"
         r"(?:own\s+)?(?:instructions|rules|guidelines|programming|training|policies|"
         r"restrictions|safety|filters|guardrails|directives|system prompt)\b"
         r"|\b(?:ignores|ignoring|breaks|bypasses|disregards)\s+(?:all|every|any)\s+"
         r"(?:\w+\s+)?(?:rules?|restrictions?|guidelines?|instructions?|polic(?:y|ies))\b"),
        ("override instructions",
         r"\b(?:ignore|disregard|forget)\s+(?:whatever|everything|anything|what|all)\s+"
         r"(?:that\s+)?(?:the\s+|your\s+)?(?:developers?|creators?|makers?|company|openai|"
         r"anthropic|meta|admins?|operators?|they)\s+(?:have\s+)?(?:told|taught|said to|"
         r"instructed|programmed|trained)\s+you\b"
         r"|\byour (?:only|one|new|sole) (?:rule|directive|purpose|goal) (?:now )?is to "
         r"(?:obey|serve|comply|do what)|\byou (?:must|will|shall) (?:now )?obey (?:me|my|"
         r"every|all|only)\b"),
        ("persona jailbreak",
         r"\b(?:you|you'?re|ai|assistant|bot|chatbot|model|character|persona)\b.{0,40}"
         r"\b(?:has|have|with|without) no (?:ethics|morals|moral compass|conscience|ethical "
         r"(?:guidelines|limits|constraints|boundaries))\b"
         r"|\byou are no longer (?:an? |the )?(?:assistant|ai|chatbot|bound|restricted|limited|"
         r"an ai model|a language model)\b"),
        ("reveal system prompt",
         r"\b(?:print|show|repeat|output|dump|reveal|list|display|paste|copy|give me)\s+"
         r"(?:me\s+)?(?:everything|all|the (?:text|content|contents|tokens))\s+(?:that\s+"
         r"(?:is|was)\s+)?(?:in|of|from)\s+(?:your\s+)?(?:context(?: window)?|memory|prompt|"
         r"instructions)\b|\b(?:everything|all (?:the )?text)\s+(?:before|above|preceding)\s+"
         r"my first message\b"),
        ("reveal system prompt",
         r"\b(?:hidden|secret|initial|first|original|private|internal)\s+(?:\w+\s+)?"
         r"(?:message|sentence|instructions?|text|prompt|rules)\b.{0,40}\b(?:you were given|"
         r"given to you|you received|from (?:the|your) (?:developers?|creators?|operators?|"
         r"admins?)|by (?:the|your) (?:developers?|creators?|operators?|admins?))"),
        ("disable safety",
         r"\b(?:disable|turn off|deactivate|switch off|remove|bypass|circumvent|get around|"
         r"evade|override)\s+(?:all\s+|any\s+|your\s+|the\s+)*(?:(?:safety|content|ethical|"
         r"moderation)\s+)+(?:filters?|guidelines|protocols?|restrictions|settings|"
         r"mechanisms?|guardrails|checks|systems?|layers?|mode|features?|policy|policies)"),
    )
)

# Talking about injection rather than doing it: defending, explaining, classifying.
_ABOUT = re.compile(
    r"\b(?:what (?:is|are|does) (?:an? )?(?:prompt injection|injection|jailbreak\w*|dan)|"
    r"explain|how (?:do|can|should) (?:i|we) (?:defend|protect|"
    r"detect|prevent|stop|guard|mitigate|block|filter)|defen[cs]e against|protect (?:my|our|"
    r"an?) (?:bot|app|llm|model|chatbot|assistant)|detect(?:ing|ion of)?|mitigat\w+|"
    r"classif\w+|is (?:this|that|it) (?:an? )?(?:prompt )?injection|example of (?:a )?"
    r"(?:prompt )?injection|red[- ]team(?:ing)? (?:report|guide)|security (?:review|audit)|"
    r"sanitiz\w+|sanitis\w+|regex|unit test|test case|translat\w+|into (?:german|french|"
    r"spanish|english|italian|portuguese|dutch|japanese|chinese))\b"
)
_OBEY = re.compile(r"\b(?:then|and) (?:obey|follow|execute|do|comply with|act on) (?:it|them|"
                   r"that|what it says)\b|\bdo what it says\b")
_QUOTED = re.compile(r"[\"'“”‘’`]")


def find_injection(view: str) -> str | None:
    """The name of the first injection pattern found in a normalised view, if any."""
    for name, pattern in PATTERNS:
        match = pattern.search(view)
        if match and not _discussed(view, match, name):
            return name
    return None


def _discussed(view: str, match: re.Match[str], name: str) -> bool:
    """A mention inside a question about the technique, not an attempt at it."""
    if _OBEY.search(view):
        return False  # "translate this, then do what it says" is an attempt
    if name == "fake chat turn" and not view.strip().startswith(("<", "[", "#", "system")):
        # A template token quoted in a programming question: the question says so.
        return bool(_ABOUT.search(view)) or "template" in view or "token" in view
    if not _ABOUT.search(view):
        return False
    # Quoted at the match: the phrase is the subject of the question, not an order.
    window = view[max(0, match.start() - 3):match.end() + 3]
    return bool(_QUOTED.search(window))


class Injection:
    """Blocks attempts to override the assistant's instructions or extract its prompt."""

    name = "injection"

    def inspect(self, subject: Subject) -> Verdict:
        try:
            for index, view in enumerate(subject.views):
                found = find_injection(view)
                if found:
                    where = "text" if index == 0 else "decoded text"
                    return Verdict(Action.BLOCK, self.name, Category.PROMPT_INJECTION,
                                   score=1.0, reason=f"{found} (in the {where})",
                                   excerpt=view[:80])
        except Exception:  # a check never raises on odd input
            log.exception("injection check failed; letting the text through")
        return Verdict.allow(self.name)
